"""The live widgets, in headless Chromium on the built site: the browser computes what gpt2lib does.

Needs the site built by ``scripts/setup.sh`` (``_build/html`` with ``widgets/``) and Debian's
``chromium``; without them the tests skip here, and fail under CI (``CI=true``), where both exist.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt2lib.tokenizer import get_tokenizer
from tools.browser import Chromium, find_chromium, foreign_requests, serve

SITE = Path(__file__).resolve().parent.parent / "_build" / "html"
GENERATE = "document.querySelector('[data-widget=generate]')"
ATTENTION = "document.querySelector('[data-widget=attention]')"
TOKENS = "document.querySelector('[data-widget=tokens]')"


@pytest.fixture(scope="module")
def browser():
    missing = [what for what, ok in (("the built site with its widgets (scripts/setup.sh)",
                                      (SITE / "widgets" / "models.json").is_file()),
                                     ("chromium", find_chromium() is not None)) if not ok]  # fmt: skip
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the widget tests, but this machine lacks {' and '.join(missing)}")
        pytest.skip(f"needs {' and '.join(missing)}")
    with serve(SITE) as base, Chromium() as chromium:
        chromium.base = base
        yield chromium


def open_page(browser: Chromium, page: str, width: int = 390) -> None:
    """Open a chapter at a phone's width (or ``width``) and wait until its widgets are ready."""
    browser.resize(width)
    browser.navigate(browser.base + f"book/{page}.html")
    browser.wait_for("document.querySelectorAll('.gpt2-widget').length > 0 && "
                     "Array.from(document.querySelectorAll('.gpt2-widget')).every("
                     "w => w.classList.contains('gpt2-ready'))")  # fmt: skip


def set_value(browser: Chromium, box: str, selector: str, value: str) -> None:
    browser.evaluate(f"(() => {{ const e = {box}.querySelector({json.dumps(selector)}); "
                     f"e.value = {json.dumps(value)}; e.dispatchEvent(new Event('input')); }})()")  # fmt: skip


def no_trouble(browser: Chromium) -> None:
    """Nothing the page did left its own host, nothing logged an error, and every widget fits
    the screen (the page does not scroll sideways, nor does any widget's box)."""
    assert foreign_requests(browser.requests) == []
    assert browser.errors == []
    assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth && "
                            "Array.from(document.querySelectorAll('.gpt2-widget'))"
                            ".every(w => w.scrollWidth <= w.clientWidth + 1)")  # fmt: skip


TEXTS = [
    "Hello, do you like tea? <|endoftext|> In the sunlit terraces",
    "Café, naïve, Œuvre — ß and ẞ; 東京 und 🤖🦙 emoji",
    "   leading spaces,\ttabs\t\tand\n\n\nnewlines   ",
    "def f(x):\n    return x**2  # code, 12345 6789.01 1e-3",
    "I'm sure they'd've said 'no' — it's ROMEO's line: \"Wherefore?\"",
    "",
]


def test_the_page_tokenizes_as_tiktoken_does(browser):
    open_page(browser, "00_text_to_tokens")
    gpt2 = get_tokenizer()
    for text in TEXTS:
        set_value(browser, TOKENS, "textarea", text)
        ids = browser.evaluate(f"{TOKENS}.gpt2Result.ids")
        assert ids == gpt2.encode(text, allowed_special="all"), text
    assert "15 tokens" not in browser.evaluate(f"{TOKENS}.innerText")  # the last text is empty
    no_trouble(browser)


PROMPTS = ["ROMEO:\n", "First Citizen:\nWe are", "KING HENRY:\nNow, my lords,", "To be, or not",
           "Every effort moves you"]  # fmt: skip


def generate_in_page(browser: Chromium, prompt: str, new_tokens: int, **settings: str) -> dict:
    set_value(browser, GENERATE, "textarea", prompt)
    set_value(browser, GENERATE, "input[aria-label='new tokens']", str(new_tokens))
    for label, value in settings.items():
        set_value(browser, GENERATE, f"input[aria-label='{label}']", value)
    browser.evaluate(f"{GENERATE}.gpt2Result = undefined; {GENERATE}.querySelector('button').click()")
    return browser.wait_for(f"{GENERATE}.gpt2Result && {GENERATE}.gpt2Result.done && "
                            f"{GENERATE}.gpt2Result", timeout=180)  # fmt: skip


def test_greedy_generation_in_the_page_equals_gpt2lib_generate(browser):
    from gpt2lib.generate import generate
    from gpt2lib.mini import load_mini

    mini, gpt2 = load_mini(), get_tokenizer()
    open_page(browser, "04_pretrained_weights", width=1280)
    for prompt in PROMPTS:
        result = generate_in_page(browser, prompt, 24, temperature="0")
        expected = generate(mini, torch.tensor([gpt2.encode(prompt)]), 24)[0].tolist()
        assert result.get("ids") == expected, (prompt, result)
    card = browser.evaluate(f"{GENERATE}.querySelector('.gpt2-model-card').innerText")
    meta = json.loads((SITE / "widgets" / "models.json").read_text())["mini-shakespeare"]
    assert meta["sha256"][:12] in card and "checked in this browser" in card
    assert "5.115" in card  # chapter 3's validation loss of this model
    # sampling: the same seed gives the same text, and the bars show a distribution
    first = generate_in_page(browser, "ROMEO:\n", 12, temperature="1", seed="7")
    again = generate_in_page(browser, "ROMEO:\n", 12, temperature="1", seed="7")
    assert first["ids"] == again["ids"]
    shares = browser.evaluate(f"Array.from({GENERATE}.querySelectorAll('.gpt2-bar-value'))"
                              ".map(e => parseFloat(e.textContent))")  # fmt: skip
    assert len(shares) == 10 and shares == sorted(shares, reverse=True) and sum(shares) <= 100.5
    no_trouble(browser)


def test_attention_in_the_page_equals_pytorch(browser):
    from gpt2lib.mini import load_mini
    from gpt2lib.model import attention_weights

    mini, gpt2 = load_mini(), get_tokenizer()
    open_page(browser, "04_pretrained_weights")
    prompt = "ROMEO:\nI will not go to the king, for he is angry with me"
    set_value(browser, ATTENTION, "textarea", prompt)
    browser.evaluate(f"{ATTENTION}.querySelector('button').click()")
    browser.wait_for(f"{ATTENTION}.gpt2Result && {ATTENTION}.gpt2Result.weights", timeout=180)
    ids = gpt2.encode(prompt)
    expected = attention_weights(mini, torch.tensor([ids]))[:, 0]  # (layers, heads, T, T)
    for layer, head in ((0, 0), (3, 2), (2, 3)):
        browser.evaluate(f"(() => {{ const b = {ATTENTION}; const [l, h] = b.querySelectorAll('select');"
                         f" l.value = '{layer}'; h.value = '{head}'; l.dispatchEvent(new Event('change')); }})()")  # fmt: skip
        result = browser.evaluate(f"{ATTENTION}.gpt2Result")
        assert (result["layer"], result["head"], result["ids"]) == (layer, head, ids)
        weights = np.array(result["weights"]).reshape(len(ids), len(ids))
        np.testing.assert_allclose(weights, expected[layer, head].numpy(), atol=1e-4, rtol=0)
    no_trouble(browser)


def test_without_webassembly_a_widget_says_so(browser):
    script = browser.call("Page.addScriptToEvaluateOnNewDocument",
                          source="delete window.WebAssembly")  # fmt: skip
    try:
        open_page(browser, "04_pretrained_weights")
        browser.evaluate(f"{GENERATE}.querySelector('button').click()")
        message = browser.wait_for(f"{GENERATE}.gpt2Result && {GENERATE}.gpt2Result.error")
        assert "cannot run WebAssembly" in message
        assert "cannot run WebAssembly" in browser.evaluate(f"{GENERATE}.innerText")
    finally:
        browser.call("Page.removeScriptToEvaluateOnNewDocument", identifier=script["identifier"])


SPAM = "document.querySelector('[data-widget=spam]')"
MESSAGES = [
    "You are a winner! You have been specially selected to receive $1000 cash or a $2000 award.",
    "Hey, just wanted to check if we're still on for dinner tonight? Let me know!",
    "URGENT! Your mobile number has won a £2,000 prize. Call 09061701461 to claim now.",
    "Can you pick up some milk on your way home?",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121 " * 3,
    "ok <|endoftext|> see u at 5 :) 🤖",
]


def test_the_spam_probability_in_the_page_equals_pytorchs(browser):
    sys.path.insert(0, str(SITE.parent.parent / "scripts"))
    from build_widgets import spam_classifier

    model, about = spam_classifier()
    tokenizer = get_tokenizer()
    open_page(browser, "05_lora_spam")
    labels = []
    for text in MESSAGES:
        set_value(browser, SPAM, "textarea", text)
        browser.evaluate(f"{SPAM}.gpt2Result = undefined; {SPAM}.querySelector('button').click()")
        result = browser.wait_for(f"{SPAM}.gpt2Result", timeout=180)
        ids = tokenizer.encode(text, disallowed_special=())[: about["max_length"]]  # as classify
        assert result.get("ids") == ids, (text, result)
        with torch.no_grad():
            expected = torch.softmax(model(torch.tensor([ids]))[0, -1], dim=-1)[1].item()
        assert abs(result["probability"] - expected) < 1e-3, (text, result, expected)
        labels.append(result["label"])
    assert labels[:4] == ["spam", "ham", "spam", "ham"]  # as chapter 5's `classify` prints them
    card = browser.evaluate(f"{SPAM}.querySelector('.gpt2-model-card').innerText")
    assert "test accuracy" in card and f"{about['test_accuracy']:.3f}" in card
    no_trouble(browser)


INSTRUCT = "document.querySelector('[data-widget=instruct]')"


def test_the_instruction_widget_answers_as_pytorch_does(browser):
    """Chapter 6's widget: on every task it offers, the tuned model's answer and the base model's
    equal what gpt2lib.instruction_tuning.generate_responses gives with the same weights."""
    sys.path.insert(0, str(SITE.parent.parent / "scripts"))
    from build_widgets import instruct_model

    from gpt2lib.instruction_tuning import generate_responses
    from gpt2lib.mini import load_mini

    meta = json.loads((SITE / "widgets" / "models.json").read_text())["mini-instruct"]
    model, about = instruct_model()  # the build's own run, from its cache
    examples, n = meta["examples"], meta["max_new_tokens"]
    tuned = generate_responses(model, examples, max_new_tokens=n, batch_size=32)
    base = generate_responses(load_mini(), examples, max_new_tokens=n, batch_size=32)
    open_page(browser, "06_instruction_tuning")
    for i, record in enumerate(examples):
        browser.evaluate(f"(() => {{ const s = {INSTRUCT}.querySelector('select'); s.value = '{i}';"
                         " s.dispatchEvent(new Event('change')); })()")  # fmt: skip
        browser.evaluate(f"{INSTRUCT}.gpt2Result = undefined; {INSTRUCT}.querySelector('button').click()")
        result = browser.wait_for(f"{INSTRUCT}.gpt2Result", timeout=180)
        assert (result.get("answer"), result.get("base_answer")) == (tuned[i], base[i]), (record, result)
    right = sum(a.strip().rstrip(".").strip() == r["output"] for a, r in zip(tuned, examples, strict=True))
    assert right >= len(examples) // 2  # the tuned model answers most of them, the base model none
    assert not any(base)
    card = browser.evaluate(f"{INSTRUCT}.querySelector('.gpt2-model-card').innerText")
    assert f"{meta['exact_match']['all']:.3f}" in card and meta["sha256"][:12] in card
    no_trouble(browser)
