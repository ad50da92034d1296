"""Benchmark of the live widgets: the browser against gpt2lib on this machine's CPU, in one run.

    python -m benchmarks.widgets          # needs the built site (scripts/setup.sh) and chromium

Prints a markdown table and writes it, with the raw figures, to
``benchmarks/results/widgets/<name>.md`` and ``.json``:

1. greedy decoding, new tokens/s, mini GPT-2, 64 new tokens after "ROMEO:\\n": the chapter-4
   widget in headless Chromium (ONNX Runtime Web, WebAssembly, one thread, each step runs the
   whole sequence: the exported graph has no KV cache), against ``gpt2lib.generate`` in this
   process on one thread and on all of them; the median of 3 runs after a warm-up each;
2. time from opening a page to its first answer (the page served from a loopback port, so the
   network costs nothing; a reader's connection adds the bytes of 3 over its speed); chapter
   6's first answer is both models' (the tuned one's and the base one's, up to 16 tokens each);
3. the bytes each widget page downloads: when it opens, and after every widget on it has run;
   and the bytes of the models, each file once (the budget: 25 MB for all of them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from tools.browser import Chromium, serve

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_build" / "html"
PROMPT, NEW_TOKENS, REPS = "ROMEO:\n", 64, 3
GENERATE = "document.querySelector('[data-widget=generate]')"


def _set(browser: Chromium, selector: str, value: str) -> None:
    browser.evaluate(f"(() => {{ const e = {GENERATE}.querySelector({json.dumps(selector)}); "
                     f"e.value = {json.dumps(value)}; }})()")  # fmt: skip


def _generate(browser: Chromium, new_tokens: int) -> tuple[float, dict]:
    """Seconds the generation widget takes to write ``new_tokens`` greedy tokens, and its result."""
    _set(browser, "textarea", PROMPT)
    _set(browser, "input[aria-label='new tokens']", str(new_tokens))
    _set(browser, "input[aria-label='temperature']", "0")
    start = time.perf_counter()
    browser.evaluate(f"{GENERATE}.gpt2Result = undefined; {GENERATE}.querySelector('button').click()")
    result = browser.wait_for(f"{GENERATE}.gpt2Result && {GENERATE}.gpt2Result.done && {GENERATE}.gpt2Result",
                              timeout=300)  # fmt: skip
    elapsed = time.perf_counter() - start
    if "error" in result:
        raise RuntimeError(result["error"])
    return elapsed, result


def _gpt2lib_rate(prompt_ids: list[int], threads: int) -> float:
    from gpt2lib.generate import generate
    from gpt2lib.mini import load_mini

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, ids = load_mini(), torch.tensor([prompt_ids])
        times = []
        for rep in range(REPS + 1):
            start = time.perf_counter()
            generate(model, ids, NEW_TOKENS)
            if rep:  # the first is the warm-up
                times.append(time.perf_counter() - start)
        return NEW_TOKENS / statistics.median(times)
    finally:
        torch.set_num_threads(before)


def measure() -> dict:
    with serve(SITE) as base, Chromium() as browser:
        browser.resize(1280)
        pages = {}
        # time to the first answer, on the page's own clock (ms since it began to load): the
        # tokenizer answers when the page opens; the generation widget when its first press
        # (made as soon as the widget is ready) has downloaded and started the model
        ready = "document.querySelectorAll('.gpt2-ready').length > 0"
        errors: list[str] = []

        def go(url: str, settle: bool = True) -> None:
            errors.extend(browser.errors)  # a navigation starts a new list: keep every page's
            browser.navigate(url, settle=settle)

        go(base + "book/00_text_to_tokens.html", settle=False)
        at = browser.wait_for("document.querySelector('[data-widget=tokens]')?.gpt2Result?.at")
        browser.settle()
        pages["00_text_to_tokens"] = {"first_answer_s": at / 1000,
                                      "bytes_on_open": sum(browser.received.values())}  # fmt: skip
        go(base + "book/04_pretrained_weights.html", settle=False)
        browser.wait_for(ready)
        first, result = _generate(browser, 1)  # includes the model's download and start-up
        browser.settle()
        page = {"first_answer_s": result["at"] / 1000, "first_press_s": first,
                "bytes_on_open": None}  # fmt: skip
        go(base + "book/04_pretrained_weights.html")  # again: what opening costs
        page["bytes_on_open"] = sum(browser.received.values())
        browser.wait_for(ready)
        _generate(browser, 1)
        browser.evaluate("document.querySelector('[data-widget=attention] button').click()")
        browser.wait_for("document.querySelector('[data-widget=attention]').gpt2Result")
        page["bytes_after_use"] = sum(browser.received.values())
        page["largest"] = sorted(browser.received.items(), key=lambda kv: -kv[1])[:3]
        pages["04_pretrained_weights"] = page
        spam = "document.querySelector('[data-widget=spam]')"
        go(base + "book/05_lora_spam.html", settle=False)
        browser.wait_for(ready)
        browser.evaluate(f"{spam}.querySelector('button').click()")
        at = browser.wait_for(f"{spam}.gpt2Result && {spam}.gpt2Result.at")
        browser.settle()
        pages["05_lora_spam"] = {"first_answer_s": at / 1000, "bytes_after_use": sum(browser.received.values())}
        go(base + "book/05_lora_spam.html")
        pages["05_lora_spam"]["bytes_on_open"] = sum(browser.received.values())
        instruct = "document.querySelector('[data-widget=instruct]')"
        go(base + "book/06_instruction_tuning.html", settle=False)
        browser.wait_for(ready)
        browser.evaluate(f"{instruct}.querySelector('button').click()")  # both models' answers
        at = browser.wait_for(f"{instruct}.gpt2Result && {instruct}.gpt2Result.at", timeout=300)
        browser.settle()
        pages["06_instruction_tuning"] = {"first_answer_s": at / 1000,
                                          "bytes_after_use": sum(browser.received.values())}  # fmt: skip
        go(base + "book/06_instruction_tuning.html")
        pages["06_instruction_tuning"]["bytes_on_open"] = sum(browser.received.values())
        pages["00_text_to_tokens"]["bytes_after_use"] = pages["00_text_to_tokens"]["bytes_on_open"]
        go(base + "book/04_pretrained_weights.html")
        browser.wait_for(ready)
        _, result = _generate(browser, NEW_TOKENS)  # warm-up; the prompt's ids for gpt2lib
        prompt_ids = result["ids"][: result["promptLength"]]
        browser_rate = NEW_TOKENS / statistics.median(_generate(browser, NEW_TOKENS)[0] for _ in range(REPS))
        errors.extend(browser.errors)
        version = browser.call("Browser.getVersion")["product"].split("/")[-1]
    models = json.loads((SITE / "widgets" / "models.json").read_text())
    lock = json.loads((ROOT / "site" / "package-lock.json").read_text())["packages"]
    return {
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
        "chromium": version,
        "onnxruntime_web": lock["node_modules/onnxruntime-web"]["version"],
        "browser_tokens_per_s": browser_rate,
        "gpt2lib_tokens_per_s_1_thread": _gpt2lib_rate(prompt_ids, 1),
        "gpt2lib_tokens_per_s_all_threads": _gpt2lib_rate(prompt_ids, torch.get_num_threads()),
        "threads": torch.get_num_threads(),
        "pages": pages,
        "model_files": {f["file"]: f["bytes"] for m in models.values()
                        for f in [{"file": m["file"], "bytes": (SITE / "widgets" / m["file"]).stat().st_size},
                                  *m.get("external", [])]},  # fmt: skip
        "console_errors": errors,
    }


def table(r: dict) -> str:
    mb = 1e6
    b, one, all_ = (r["browser_tokens_per_s"], r["gpt2lib_tokens_per_s_1_thread"],
                    r["gpt2lib_tokens_per_s_all_threads"])  # fmt: skip
    lines = [
        f"Live widgets, {r['machine']}: headless Chromium {r['chromium']}, ONNX Runtime Web "
        f"{r['onnxruntime_web']} (WebAssembly, 1 thread), torch {torch.__version__}. The widget runs "
        "the whole sequence at each step (the exported graph has no KV cache); gpt2lib.generate "
        "uses its cache.",
        "",
        "| measure | browser (ONNX Runtime Web) | gpt2lib (PyTorch, CPU) | browser / gpt2lib |",
        "|---|---:|---:|---:|",
        f"| greedy new tokens/s, mini GPT-2, 1 thread | {b:.1f} | {one:.1f} | {b / one:.2f}x |",
        f"| greedy new tokens/s, gpt2lib on {r['threads']} threads | {b:.1f} | {all_:.1f} | {b / all_:.2f}x |",
        "",
        "| page | first answer after opening | downloaded on opening | after every widget ran |",
        "|---|---:|---:|---:|",
    ]
    for name, p in r["pages"].items():
        lines.append(f"| {name} | {p['first_answer_s']:.2f} s | {p['bytes_on_open'] / mb:.1f} MB "
                     f"| {p['bytes_after_use'] / mb:.1f} MB |")  # fmt: skip
    total = sum(r["model_files"].values())
    lines += ["", f"All the book's models together: {total / mb:.1f} MB as served (budget 25 MB), "
              "each file counted once: " + ", ".join(f"{n.removeprefix('models/')} {v / mb:.1f} MB"
                                                     for n, v in r["model_files"].items()) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="cpu")
    args = parser.parse_args(argv)
    if not (SITE / "widgets" / "models.json").is_file():
        print(f"no widgets under {SITE}: run scripts/setup.sh first", file=sys.stderr)
        return 2
    results = measure()
    out = ROOT / "benchmarks" / "results" / "widgets"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (out / f"{args.name}.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
