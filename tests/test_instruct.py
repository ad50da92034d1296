import json

import pytest
import torch

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.data.instructions import InstructionDataset, format_input
from gpt2lib.generate import generate
from gpt2lib.instruction_tuning import (
    extract_response,
    generate_responses,
    response_prompt,
    write_responses,
)
from gpt2lib.tokenizer import get_tokenizer

RECORDS = [
    {"instruction": "Name a primary colour.", "input": "", "output": "Red."},
    {
        "instruction": "Edit the following sentence for grammar.",
        "input": "He go to the park every day.",
        "output": "He goes to the park every day.",
    },
    {"instruction": "What is 2 + 2?", "input": "", "output": "4"},
    {
        "instruction": "Convert the temperature to Fahrenheit.",
        "input": "25 degrees Celsius, measured at noon in the shade on a summer day",
        "output": "77 degrees Fahrenheit.",
    },
    {"instruction": "Give a synonym of 'happy'.", "input": "", "output": "Joyful."},
]
PROMPT = format_input(RECORDS[0])


# --- extract_response ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "prompt", "expected"),
    [
        # the book's way: the prompt has no header, the model writes it
        (PROMPT + "\n\n### Response:\nRed.<|endoftext|>", PROMPT, "Red."),
        # the header is part of the prompt: everything after the prompt is the answer
        (PROMPT + "\n\n### Response:\n" + "Red.", PROMPT + "\n\n### Response:\n", "Red."),
        # the whole text without the prompt: cut after the first header
        (PROMPT + "\n\n### Response:\n  Red.  \n", None, "Red."),
        # the continuation alone
        ("\n\n### Response:\nBlue.<|endoftext|>ignored", None, "Blue."),
        ("Blue.", None, "Blue."),
        # end-of-text, then what a model writes after it, is dropped
        ("Green.<|endoftext|>\n\n### Instruction:\nmore", None, "Green."),
        # a new section of the format ends the answer
        ("Green.\n\n### Instruction:\nName a fruit.", None, "Green."),
        (
            PROMPT + "\n\n### Response:\nGreen.\n\n### Instruction:\nName a fruit.\n\n"
            "### Response:\nApple.",
            PROMPT + "\n\n### Response:\n",
            "Green.",
        ),
        (
            PROMPT + "\n\n### Response:\nRed.\n### Input:\nx",
            PROMPT + "\n\n### Response:\n",
            "Red.",
        ),
        # a header the model repeats after answering does not replace the answer
        (
            PROMPT + "\n\n### Response:\nRed.\n\n### Response:\nBlue.",
            PROMPT + "\n\n### Response:\n",
            "Red.",
        ),
        # multi-line answers keep their inner lines; Windows line ends become \n
        ("### Response:\r\nLine one.\r\n\r\nLine two.\r\n", None, "Line one.\n\nLine two."),
        # "###" inside a line is text, not a section
        ("Use ### as a heading marker.", None, "Use ### as a heading marker."),
        # nothing written
        (PROMPT + "<|endoftext|>", PROMPT, ""),
        ("", None, ""),
    ],
)
def test_extract_response(text, prompt, expected):
    assert extract_response(text, prompt) == expected


def test_extract_response_with_a_prompt_that_is_not_a_prefix_treats_text_as_continuation():
    assert extract_response("### Response:\nRed.", prompt="something else") == "Red."


def test_extract_response_rejects_non_strings():
    with pytest.raises(TypeError, match="text must be a str"):
        extract_response([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prompt must be a str"):
        extract_response("x", prompt=5)  # type: ignore[arg-type]


def test_response_prompt_is_a_prefix_of_the_training_tokens():
    tokenizer = get_tokenizer()
    dataset = InstructionDataset(RECORDS, tokenizer)
    for record, item in zip(RECORDS, dataset, strict=True):
        with_header = tokenizer.encode(response_prompt(record))
        assert item.input_ids[: len(with_header)] == with_header
        assert response_prompt(record, response_header=False) == format_input(record)
        assert response_prompt(record).endswith("\n\n### Response:\n")


# --- write_responses ----------------------------------------------------------------------------


def test_write_responses_writes_records_plus_key(tmp_path):
    path = tmp_path / "out" / "instruction-data-with-response.json"
    responses = [f"answer {i} — é" for i in range(len(RECORDS))]
    assert write_responses(RECORDS, responses, path) == path
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == [{**r, "model_response": a} for r, a in zip(RECORDS, responses, strict=True)]
    assert list(data[1]) == ["instruction", "input", "output", "model_response"]
    assert path.read_text(encoding="utf-8").endswith("]\n")
    assert "output" in RECORDS[0] and "model_response" not in RECORDS[0]  # inputs untouched
    write_responses(RECORDS[:1], ["x"], path, key="my_model")
    assert json.loads(path.read_text()) == [{**RECORDS[0], "my_model": "x"}]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_write_responses_is_atomic_and_checks_its_input(tmp_path):
    path = tmp_path / "responses.json"
    write_responses(RECORDS[:1], ["first"], path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_responses([{**RECORDS[0], "extra": object()}], ["second"], path)
    with pytest.raises(ValueError, match="2 records but 1 responses"):
        write_responses(RECORDS[:2], ["only one"], path)
    with pytest.raises(TypeError, match="response 0 must be a str"):
        write_responses(RECORDS[:1], [None], path)  # type: ignore[list-item]
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# --- generate_responses -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    """A random model with GPT-2's vocabulary (the tokenizer's IDs must fit)."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50257, context_length=128, emb_dim=32, n_heads=4, n_layers=2)
    return GPTModel(cfg).eval()


def test_generate_responses_is_deterministic_and_batched_equals_one_by_one(tiny):
    one_by_one = generate_responses(tiny, RECORDS, max_new_tokens=6, batch_size=1)
    batched = generate_responses(tiny, RECORDS, max_new_tokens=6, batch_size=3)
    uncached = generate_responses(tiny, RECORDS, max_new_tokens=6, batch_size=8, use_cache=False)
    assert len(one_by_one) == len(RECORDS) and all(isinstance(r, str) for r in one_by_one)
    assert batched == one_by_one == uncached
    assert generate_responses(tiny, RECORDS, max_new_tokens=6, batch_size=3) == batched
    assert any(r for r in batched)  # a random model still writes something


def test_generate_responses_is_greedy_decoding_of_the_prompt(tiny):
    tokenizer = get_tokenizer()
    prompt = response_prompt(RECORDS[1])
    ids = torch.tensor([tokenizer.encode(prompt)])
    out = generate(tiny, ids, 5, temperature=0.0)
    expected = tokenizer.decode(out[0, ids.shape[1] :].tolist()).strip()
    [got] = generate_responses(tiny, RECORDS[1:2], max_new_tokens=5)
    assert got == extract_response(expected)


def test_generate_responses_stops_at_end_of_text(tiny):
    tokenizer = get_tokenizer()
    ids = torch.tensor([tokenizer.encode(response_prompt(RECORDS[0]))])
    free = generate(tiny, ids, 6)[0, ids.shape[1] :].tolist()
    eos = free[2]  # pretend the third token is end-of-text: the answer is the first two
    [got] = generate_responses(tiny, RECORDS[:1], max_new_tokens=6, eos_id=eos)
    assert got == tokenizer.decode(free[: free.index(eos)]).strip()
    assert generate_responses(tiny, RECORDS, max_new_tokens=6, batch_size=2, eos_id=eos)[0] == got


def test_generate_responses_rejects_bad_arguments(tiny):
    with pytest.raises(ValueError, match="batch_size"):
        generate_responses(tiny, RECORDS, batch_size=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_responses(tiny, RECORDS, max_new_tokens=0)
    with pytest.raises(ValueError, match="record 1 has no field 'output'"):
        generate_responses(tiny, [RECORDS[0], {"instruction": "x", "input": ""}])
