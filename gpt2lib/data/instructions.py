"""Instruction data, the Alpaca prompt format, and batching with loss masking."""

from __future__ import annotations

import json
import numbers
import os
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch.utils.data import Dataset

from ..download import fetch
from ..files import FileFormatError, read_text

if TYPE_CHECKING:
    import tiktoken

URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/"
    "01_main-chapter-code/instruction-data.json"
)
SHA256 = "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944"
SIZE = 203_524
FIELDS = ("instruction", "input", "output")

PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
RESPONSE_HEADER = "### Response:"

Record = dict[str, str]


def load_instructions(path: str | os.PathLike[str] | None = None) -> list[Record]:
    """Instruction records, validated.

    With no ``path``, the book's 1,100 records are downloaded (once, sha256-checked). With a
    ``path``, a JSON file holding a list of records, or a JSONL file (one record per line), is
    read. Every record must be an object with string fields ``instruction``, ``input`` and
    ``output`` (extra fields are kept); otherwise a ``ValueError`` names the record and field.
    """
    if path is None:
        path = fetch(URL, sha256=SHA256, size=SIZE)
    path = Path(path)
    text = read_text(path, "instruction file")  # a byte-order mark is dropped
    records: Any = None
    if text.lstrip().startswith(("[", "{")):
        try:
            records = json.loads(text)  # one JSON document: a list (or a wrong top level)
        except json.JSONDecodeError as err:
            if text.lstrip().startswith("["):
                raise FileFormatError(path, f"not valid JSON: {err}") from None
        if isinstance(records, dict) and "\n" not in text.strip():
            records = [records]  # JSON Lines of one record
    if records is None:  # JSON Lines: one record per line
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise FileFormatError(path, f"line {lineno} is not valid JSON: {err}") from None
    if not isinstance(records, list):
        kind = "a JSON object" if isinstance(records, dict) else type(records).__name__
        raise FileFormatError(
            path, f"expected a list of records (or one record per line), got {kind}"
        )
    if not records:
        raise FileFormatError(path, "holds no records (an empty file or an empty list)")
    return [validate_record(r, i, source=str(path)) for i, r in enumerate(records)]


def validate_record(record: object, index: int, source: str = "data") -> Record:
    """Check one record; return it as a new ``dict``."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{source}: record {index} is not an object: {record!r:.80}")
    for field in FIELDS:
        if field not in record:
            raise ValueError(f"{source}: record {index} has no field {field!r}")
        if not isinstance(record[field], str):
            kind = type(record[field]).__name__
            raise ValueError(
                f"{source}: record {index}: field {field!r} must be a string, not {kind}"
            )
    return dict(record)


def format_input(entry: Mapping[str, Any]) -> str:
    """The prompt: preamble, ``### Instruction:``, and ``### Input:`` when there is an input."""
    prompt = f"{PREAMBLE}\n\n### Instruction:\n{entry['instruction']}"
    if entry.get("input"):
        prompt += f"\n\n### Input:\n{entry['input']}"
    return prompt


def format_response(entry: Mapping[str, Any]) -> str:
    """What follows the prompt in a training text: ``"\\n\\n### Response:\\n"`` + output."""
    return f"\n\n{RESPONSE_HEADER}\n{entry['output']}"


def format_example(entry: Mapping[str, Any]) -> str:
    """The whole training text, prompt and response."""
    return format_input(entry) + format_response(entry)


def split_instructions(
    data: Sequence[Record], fractions: Sequence[float] = (0.85, 0.10), seed: int | None = None
) -> tuple[list[Record], list[Record], list[Record]]:
    """Train / validation / test, cut as the book cuts them, in file order unless ``seed``
    shuffles first.

    ``fractions`` are the train and test shares; validation is the rest. The book slices train
    first, then test, then validation: with ``int(n * 0.85)`` and ``int(n * 0.10)`` records,
    1,100 records give train = [0:935], test = [935:1045], validation = [1045:1100].
    """
    if len(fractions) != 2:
        raise ValueError(f"fractions must be (train, test), got {tuple(fractions)}")
    f_train, f_test = (float(f) for f in fractions)
    if f_train <= 0 or f_test < 0 or f_train + f_test > 1:
        raise ValueError(
            f"fractions {tuple(fractions)} must satisfy train > 0, test >= 0, train + test <= 1"
        )
    items = list(data)
    if seed is not None:
        random.Random(seed).shuffle(items)
    train_end = int(len(items) * f_train)
    test_end = train_end + int(len(items) * f_test)
    return items[:train_end], items[test_end:], items[train_end:test_end]


# What an instruction asks for, by its wording: the first pattern that matches names the kind.
INSTRUCTION_KINDS: tuple[tuple[str, str], ...] = (
    ("translation", r"^translate\b"),
    ("word forms", r"\b(opposite|antonym|synonym|past tense|plural|spelling|abbreviation)\b"),
    ("definitions", r"^(define|explain|describe)\b"),
    ("numbers", r"^(convert|calculate|sort)\b.*(\d|roman|list)|fibonacci|^calculate\b"),
    ("rewriting", r"^(rewrite|re-?word|correct|edit|transform|convert|split)\b"),
    ("classification", r"^(classify|categori[sz]e|identify|pick out)\b"),
    ("writing", r"^(generate|create|list|find|provide)\b"),
    ("facts", r"^(what|which|who|where|when|how|name)\b"),
)


def instruction_kind(instruction: str) -> str:
    """The kind of an instruction (:data:`INSTRUCTION_KINDS`, by its wording; ``"other"`` if no
    pattern matches), to break a test set's results down by what was asked."""
    if not isinstance(instruction, str):
        raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
    text = instruction.strip().lower()
    for kind, pattern in INSTRUCTION_KINDS:
        if re.search(pattern, text):
            return kind
    return "other"


class InstructionItem(NamedTuple):
    """One tokenized example: all its token IDs and how many of them are the prompt."""

    input_ids: list[int]
    prompt_length: int


class InstructionDataset(Dataset[InstructionItem]):
    """Records tokenized once, up front; item ``i`` is an :class:`InstructionItem`.

    The prompt (:func:`format_input`) and the response (:func:`format_response`) are tokenized
    separately and concatenated, so the prompt's tokens are exactly those the model sees when
    it is asked to respond, and ``prompt_length`` is exact (for the book's 1,100 records this
    equals tokenizing the whole text at once). A literal ``<|endoftext|>`` in a record is plain
    text, not token 50256.
    """

    def __init__(self, data: Sequence[Mapping[str, Any]], tokenizer: tiktoken.Encoding) -> None:
        self.items: list[InstructionItem] = []
        for i, entry in enumerate(data):
            record = validate_record(entry, i)
            prompt = tokenizer.encode(format_input(record), disallowed_special=())
            response = tokenizer.encode(format_response(record), disallowed_special=())
            self.items.append(InstructionItem(prompt + response, len(prompt)))

    @property
    def prompt_lengths(self) -> list[int]:
        return [item.prompt_length for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> InstructionItem:
        return self.items[index]


BatchItem = Sequence[int] | torch.Tensor | InstructionItem | tuple[Sequence[int], int]


def _unpack(item: object, index: int) -> tuple[list[int], int | None]:
    """``(ids, prompt_length or None)`` from a plain sequence or an ``(ids, prompt_length)``."""
    prompt_length = None
    if isinstance(item, tuple) and len(item) == 2 and not isinstance(item[0], numbers.Integral):
        item, length = item
        if not isinstance(length, numbers.Integral) or isinstance(length, bool):
            raise TypeError(f"batch item {index}: prompt length must be an int, got {length!r}")
        prompt_length = int(length)
    if isinstance(item, torch.Tensor):
        if item.ndim != 1:
            raise ValueError(f"batch item {index}: expected a 1-D tensor, got shape {item.shape}")
        ids = item.tolist()
    elif isinstance(item, Sequence) and not isinstance(item, str):
        ids = list(item)
    else:
        raise TypeError(f"batch item {index}: expected token IDs, got {type(item).__name__}")
    if not ids:
        raise ValueError(f"batch item {index} is empty")
    if prompt_length is not None and not 0 <= prompt_length <= len(ids):
        raise ValueError(
            f"batch item {index}: prompt length {prompt_length} is outside 0..{len(ids)}"
        )
    return ids, prompt_length


def _check_ids(ids: list[int], index: int, vocab_size: int) -> None:
    """Raise unless every ID is an integer in the vocabulary, naming the first that is not."""
    for position, token in enumerate(ids):
        if not isinstance(token, numbers.Integral) or isinstance(token, bool):
            raise TypeError(
                f"batch item {index}: token {position} is {token!r}, not an integer token ID"
            )
        if not 0 <= token < vocab_size:
            raise ValueError(
                f"batch item {index}: token ID {token} at position {position} is outside the "
                f"vocabulary (0 to {vocab_size - 1})"
            )


def collate(
    batch: Sequence[BatchItem],
    pad_token_id: int = 50256,
    ignore_index: int = -100,
    allowed_max_length: int | None = None,
    device: str | torch.device = "cpu",
    mask_prompt: bool = False,
    vocab_size: int = 50257,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of token sequences and build its next-token targets, both ``(B, T)`` long.

    Each item is a sequence (or 1-D tensor) of token IDs, or ``(ids, prompt_length)`` such as
    an :class:`InstructionItem`. Every item gets one ``pad_token_id`` (end-of-text) appended and
    is padded with it to ``T = longest item``; targets are the inputs shifted by one. In the
    targets, the appended end-of-text stays (the model learns to stop) and every position after
    it becomes ``ignore_index``. Masking goes by position, never by value, so a text that
    contains token 50256 itself keeps it as a target. With ``mask_prompt`` the targets that
    predict prompt tokens become ``ignore_index`` too, so only the response is learned (needs
    prompt lengths). ``allowed_max_length`` cuts inputs and targets to that many positions.
    Every token ID, ``pad_token_id`` included, must be an integer in ``0 .. vocab_size - 1``
    (GPT-2's 50,257 by default); a ``ValueError`` names the first that is not.
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    if allowed_max_length is not None and allowed_max_length <= 0:
        raise ValueError(f"allowed_max_length must be positive, got {allowed_max_length}")
    if not 0 <= pad_token_id < vocab_size:
        raise ValueError(f"pad_token_id {pad_token_id} is outside the vocabulary 0..{vocab_size - 1}")
    unpacked = [_unpack(item, i) for i, item in enumerate(batch)]
    for i, (ids, _) in enumerate(unpacked):
        _check_ids(ids, i, vocab_size)
    T = max(len(ids) for ids, _ in unpacked)
    inputs = torch.full((len(batch), T), pad_token_id, dtype=torch.long)
    targets = torch.full((len(batch), T), ignore_index, dtype=torch.long)
    for i, (ids, prompt_length) in enumerate(unpacked):
        n = len(ids)
        seq = torch.tensor(ids, dtype=torch.long)
        inputs[i, :n] = seq
        targets[i, : n - 1] = seq[1:]
        targets[i, n - 1] = pad_token_id  # the end-of-text after the last real token
        if mask_prompt:
            if prompt_length is None:
                raise ValueError(
                    f"mask_prompt=True needs prompt lengths, but batch item {i} is plain token "
                    "IDs; pass (ids, prompt_length) items such as InstructionDataset gives"
                )
            # target j predicts token j + 1: tokens 1 .. prompt_length - 1 belong to the prompt
            targets[i, : max(prompt_length - 1, 0)] = ignore_index
    if allowed_max_length is not None:
        inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]
    return inputs.to(device), targets.to(device)
