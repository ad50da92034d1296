"""gpt2lib.data.instructions: loading, the prompt format, splitting, tokenizing, collating."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from gpt2lib.data.instructions import (
    InstructionDataset,
    InstructionItem,
    collate,
    format_example,
    format_input,
    format_response,
    instruction_kind,
    load_instructions,
    split_instructions,
)
from gpt2lib.files import FileFormatError
from gpt2lib.tokenizer import get_tokenizer

EOT, IGN = 50256, -100
RECORD = {
    "instruction": "Edit the following sentence for grammar.",
    "input": "He go to the park every day.",
    "output": "He goes to the park every day.",
}


@pytest.fixture(scope="module")
def data() -> list[dict[str, str]]:
    return load_instructions()


def test_book_data(data: list[dict[str, str]]) -> None:
    assert len(data) == 1100
    assert all(set(r) == {"instruction", "input", "output"} for r in data)
    assert data[1] == RECORD
    assert sum(r["input"] == "" for r in data) == 775


def test_user_json_and_jsonl(tmp_path: Path) -> None:
    records = [RECORD, {"instruction": "Say hi.", "input": "", "output": "Hi!", "extra": 1}]
    as_json = tmp_path / "mine.json"
    as_json.write_text(json.dumps(records), encoding="utf-8")
    as_jsonl = tmp_path / "mine.jsonl"
    as_jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    assert load_instructions(as_json) == records == load_instructions(str(as_jsonl))


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '[{"instruction": "a", "input": "", "output": "b"}, {"instruction": "a", "input": ""}]',
            "record 1 has no field 'output'",
        ),
        (
            '[{"instruction": "a", "input": null, "output": "b"}]',
            "record 0: field 'input' must be a string, not NoneType",
        ),
        (
            '[{"instruction": 3, "input": "", "output": "b"}]',
            "record 0: field 'instruction' must be a string, not int",
        ),
        ('[{"instruction": "a", "input": "", "output": "b"}, ["x"]]', "record 1 is not an object"),
        (
            '{"instruction": "a", "input": "", "output": "b"}\n{"instruction": "a", "output": "b"}',
            "record 1 has no field 'input'",
        ),
        ('{"instruction": "a", "input": "", "output": "b"}\n{oops}', "line 2 is not valid JSON"),
        ("[1, 2", "not valid JSON"),
        ('"just a string"', "record 0 is not an object"),
    ],
)
def test_malformed_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_instructions(path)


def test_format_with_input() -> None:
    assert format_input(RECORD) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n"
        "### Instruction:\nEdit the following sentence for grammar.\n\n"
        "### Input:\nHe go to the park every day."
    )
    assert format_response(RECORD) == "\n\n### Response:\nHe goes to the park every day."
    assert format_example(RECORD) == format_input(RECORD) + format_response(RECORD)


def test_format_without_input() -> None:
    entry = {"instruction": "Name a color.", "input": "", "output": "Blue."}
    assert format_input(entry) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nName a color."
    )
    assert "### Input:" not in format_example(entry)
    assert format_example(entry).endswith("Name a color.\n\n### Response:\nBlue.")


def test_split_is_the_books_train_test_validation_order(data: list[dict[str, str]]) -> None:
    train, val, test = split_instructions(data)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    assert train == data[0:935] and test == data[935:1045] and val == data[1045:1100]
    assert train + test + val == data  # the book slices train, then test, then validation


def test_split_with_seed_and_errors(data: list[dict[str, str]]) -> None:
    a = split_instructions(data, seed=123)
    assert a == split_instructions(data, seed=123)
    assert [len(p) for p in a] == [935, 55, 110]
    assert a[0] != data[:935]
    assert sorted(map(str, a[0] + a[1] + a[2])) == sorted(map(str, data))
    assert split_instructions(list(range(10)), (0.5, 0.3)) == ([0, 1, 2, 3, 4], [8, 9], [5, 6, 7])
    for bad in [(0.9, 0.2), (0.0, 0.5), (0.5, -0.1), (0.85,)]:
        with pytest.raises(ValueError, match="fractions"):
            split_instructions(data, bad)


def test_dataset_keeps_prompt_length(data: list[dict[str, str]]) -> None:
    tok = get_tokenizer()
    ds = InstructionDataset(data[:20], tok)
    assert len(ds) == 20
    for entry, item in zip(data[:20], ds, strict=True):
        assert isinstance(item, InstructionItem)
        prompt = tok.encode(format_input(entry))
        assert item.prompt_length == len(prompt)
        assert item.input_ids[: item.prompt_length] == prompt
        # prompt and response tokenized apart equal the whole text tokenized at once
        assert item.input_ids == tok.encode(format_example(entry))
    assert ds.prompt_lengths == [item.prompt_length for item in ds]
    with pytest.raises(ValueError, match="record 1 has no field 'output'"):
        InstructionDataset([RECORD, {"instruction": "x", "input": ""}], tok)


BATCH = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]


def test_collate_book_example() -> None:
    inputs, targets = collate(BATCH)
    assert inputs.dtype == targets.dtype == torch.long
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, EOT, EOT, EOT], [7, 8, 9, EOT, EOT]]
    assert targets.tolist() == [
        [1, 2, 3, 4, EOT],
        [6, EOT, IGN, IGN, IGN],
        [8, 9, EOT, IGN, IGN],
    ]
    # tensors, tuples and InstructionItems without masking give the same
    same = collate([torch.tensor(BATCH[0]), tuple(BATCH[1]), InstructionItem(BATCH[2], 2)])
    assert torch.equal(same[0], inputs) and torch.equal(same[1], targets)


def test_collate_other_pad_and_ignore_values() -> None:
    inputs, targets = collate([[3, 4], [5]], pad_token_id=0, ignore_index=-1)
    assert inputs.tolist() == [[3, 4], [5, 0]]
    assert targets.tolist() == [[4, 0], [0, -1]]


def test_collate_text_containing_end_of_text_is_not_masked() -> None:
    # masking goes by position: a 50256 inside the text is a real target
    inputs, targets = collate([[1, EOT, 2], [3]])
    assert inputs.tolist() == [[1, EOT, 2], [3, EOT, EOT]]
    assert targets.tolist() == [[EOT, 2, EOT], [EOT, IGN, IGN]]
    inputs, targets = collate([[EOT, EOT], [4, 5, 6, 7]])
    assert inputs.tolist() == [[EOT, EOT, EOT, EOT], [4, 5, 6, 7]]
    assert targets.tolist() == [[EOT, EOT, IGN, IGN], [5, 6, 7, EOT]]


def test_collate_truncation() -> None:
    inputs, targets = collate(BATCH, allowed_max_length=3)
    assert inputs.tolist() == [[0, 1, 2], [5, 6, EOT], [7, 8, 9]]
    assert targets.tolist() == [[1, 2, 3], [6, EOT, IGN], [8, 9, EOT]]
    # a limit above the longest item changes nothing (no padding up to it)
    same = collate(BATCH, allowed_max_length=100)
    assert all(torch.equal(a, b) for a, b in zip(same, collate(BATCH), strict=True))
    with pytest.raises(ValueError, match="allowed_max_length"):
        collate(BATCH, allowed_max_length=0)


def test_collate_prompt_masking() -> None:
    items = [InstructionItem([0, 1, 2, 3, 4], 3), ([5, 6], 2), ([7, 8, 9], 0)]
    inputs, targets = collate(items, mask_prompt=True)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, EOT, EOT, EOT], [7, 8, 9, EOT, EOT]]
    # targets 0..prompt_length-2 predict prompt tokens 1..prompt_length-1
    assert targets.tolist() == [
        [IGN, IGN, 3, 4, EOT],
        [IGN, EOT, IGN, IGN, IGN],
        [8, 9, EOT, IGN, IGN],
    ]
    # prompt lengths are ignored unless mask_prompt is set
    assert collate(items)[1].tolist() == collate(BATCH)[1].tolist()
    with pytest.raises(ValueError, match="mask_prompt=True needs prompt lengths.*item 1"):
        collate([([1, 2], 1), [3, 4]], mask_prompt=True)


def test_collate_prompt_masking_with_truncation() -> None:
    _, targets = collate(
        [([0, 1, 2, 3, 4], 3), ([5, 6], 1)], allowed_max_length=4, mask_prompt=True
    )
    assert targets.tolist() == [[IGN, IGN, 3, 4], [6, EOT, IGN, IGN]]


def test_collate_errors() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="batch item 1 is empty"):
        collate([[1], []])
    with pytest.raises(ValueError, match="batch item 0: prompt length 3 is outside 0..2"):
        collate([([1, 2], 3)])
    with pytest.raises(TypeError, match="batch item 0: expected token IDs, got str"):
        collate(["hello"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="prompt length must be an int"):
        collate([([1, 2], "1")])  # type: ignore[list-item]


def test_collate_device_and_loss() -> None:
    inputs, targets = collate(BATCH, device=torch.device("cpu"))
    assert inputs.device.type == targets.device.type == "cpu"
    # cross_entropy skips the -100 positions: uniform logits give ln(V) over the 10 real targets
    logits = torch.zeros(*inputs.shape, 50257)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert loss.item() == pytest.approx(torch.log(torch.tensor(50257.0)).item())
    assert (targets != IGN).sum().item() == 10


def test_dataloader_over_dataset(data: list[dict[str, str]]) -> None:
    ds = InstructionDataset(data[:8], get_tokenizer())
    loader = DataLoader(ds, batch_size=4, collate_fn=partial(collate, mask_prompt=True))
    inputs, targets = next(iter(loader))
    longest = max(len(item.input_ids) for item in ds.items[:4])
    assert inputs.shape == targets.shape == (4, longest)
    for row, item in enumerate(ds.items[:4]):
        n, p = len(item.input_ids), item.prompt_length
        assert inputs[row, :n].tolist() == item.input_ids
        assert (targets[row, : p - 1] == IGN).all()
        assert targets[row, p - 1 : n - 1].tolist() == item.input_ids[p:]
        assert targets[row, n - 1].item() == EOT
        assert (targets[row, n:] == IGN).all()


# --- probes of the hardening pass -------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"[]", b"\n\n"], ids=["empty", "empty-list", "blank"])
def test_empty_instruction_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    """Probe: an empty instruction file was read as 0 records."""
    from gpt2lib.files import FileFormatError

    path = tmp_path / "data.json"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=r"data\.json: holds no records"):
        load_instructions(path)


def test_non_utf8_instruction_file_names_the_file(tmp_path: Path) -> None:
    """Probe: a non-UTF-8 instruction file gave a bare UnicodeDecodeError."""
    from gpt2lib.files import FileFormatError

    path = tmp_path / "data.json"
    path.write_bytes(b'[{"instruction": "caf\xe9", "input": "", "output": "x"}]')
    with pytest.raises(FileFormatError, match=r"data\.json: the instruction file is not UTF-8"):
        load_instructions(path)


def test_a_pretty_printed_object_is_named_not_blamed_on_line_1(tmp_path: Path) -> None:
    """Probe: a top-level JSON object was read as JSON Lines and blamed on "line 1"."""
    path = tmp_path / "one.json"
    path.write_text(json.dumps(RECORD, indent=2), encoding="utf-8")
    with pytest.raises(FileFormatError, match="expected a list of records .* got a JSON object"):
        load_instructions(path)
    jsonl = tmp_path / "lines.jsonl"  # JSON Lines starting with '{' still read as such
    jsonl.write_text(json.dumps(RECORD) + "\n" + json.dumps(RECORD) + "\n", encoding="utf-8")
    assert load_instructions(jsonl) == [RECORD, RECORD]


def test_a_byte_order_mark_is_read_past(tmp_path: Path) -> None:
    """Probe: a UTF-8 BOM broke the JSON readers ("Unexpected UTF-8 BOM")."""
    for name, text in (("a.json", json.dumps([RECORD])), ("b.jsonl", json.dumps(RECORD))):
        path = tmp_path / name
        path.write_bytes(text.encode("utf-8-sig"))
        assert load_instructions(path) == [RECORD]


def test_collate_refuses_token_ids_outside_the_vocabulary() -> None:
    """Probe: negative IDs and IDs past the vocabulary were padded and returned."""
    with pytest.raises(ValueError, match=r"batch item 1: token ID -3 at position 1 .*0 to 50256"):
        collate([[1, 2], [5, -3]])
    with pytest.raises(ValueError, match=r"batch item 0: token ID 50257 at position 0"):
        collate([[50257]])
    with pytest.raises(ValueError, match=r"token ID 100 .*0 to 99"):
        collate([[1, 100]], pad_token_id=0, vocab_size=100)
    with pytest.raises(ValueError, match="pad_token_id 50256 is outside"):
        collate([[1]], vocab_size=100)
    with pytest.raises(TypeError, match=r"token 1 is 2\.5, not an integer"):
        collate([[1, 2.5]])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("instruction", "kind"),
    [
        ("Translate 'Hello' into Russian.", "translation"),
        ("What is the opposite of 'wet'?", "word forms"),  # before "facts": a question too
        ("Provide a synonym for 'excited'.", "word forms"),
        ("Define the term 'irony'.", "definitions"),
        ("Convert 3 kilometers to meters.", "numbers"),
        ("Convert this sentence to passive voice", "rewriting"),
        ("Classify the following items: bicycle, rose, tiger.", "classification"),
        ("Generate a sentence using the word 'generous'.", "writing"),
        ("Name the author of 'Pride and Prejudice'.", "facts"),
        ("What is the capital of Denmark?", "facts"),
        ("Summarise the text.", "other"),
    ],
)
def test_instruction_kind_by_wording(instruction, kind):
    assert instruction_kind(instruction) == kind
    assert instruction_kind("  " + instruction.upper()) == kind  # case and space do not matter


def test_instruction_kind_rejects_a_non_string():
    with pytest.raises(TypeError, match="must be a str, got int"):
        instruction_kind(3)
