"""Answering instructions with a fine-tuned model: generate, extract, write.

After instruction fine-tuning (Raschka, *Build a Large Language Model (From Scratch)*, ch. 7;
Ouyang et al., 2022; Taori et al., 2023) the model is asked each test instruction in the same
Alpaca format it was trained on (:mod:`gpt2lib.data.instructions`), decodes greedily until it
writes end-of-text, and the answer is cut out of what it wrote::

    Below is an instruction ...            <- format_input(record): the prompt
    ### Instruction:
    Rewrite the sentence using a simile.
    ...
    ### Response:                          <- where the answer starts
    The car is as fast as lightning.       <- extract_response keeps this
    <|endoftext|>                          <- ... and stops here

:func:`generate_responses` decodes with the KV cache, a few prompts at a time (left-padded,
sorted by length so a batch holds similar lengths); :func:`write_responses` stores each record
with its ``model_response``, the file the LLM judge of the next chapter reads.

Usage::

    responses = generate_responses(model, test_data, max_new_tokens=256, batch_size=8)
    write_responses(test_data, responses, "instruction-data-with-response.json")
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .data.instructions import RESPONSE_HEADER, format_input, format_response, validate_record
from .files import atomic_write_text
from .generate import generate_batch
from .tokenizer import ENDOFTEXT_ID, get_tokenizer

if TYPE_CHECKING:
    import tiktoken
    from torch import nn

ENDOFTEXT = "<|endoftext|>"
# a line that opens a section of the prompt format: "### Instruction:", "### Input:", ...
_SECTION = re.compile(r"^###[ \t]*(?:Instruction|Input|Response)[ \t]*:", re.MULTILINE)


def extract_response(text: str, prompt: str | None = None) -> str:
    """The answer in ``text``, what a model wrote after ``### Response:``, tidied.

    ``text`` is the whole decoded sequence (prompt and continuation) or the continuation
    alone. In order: a leading ``prompt`` is removed; everything from the first
    ``<|endoftext|>`` on is dropped; a ``### Response:`` header the model wrote itself is
    skipped (when a prompt was removed it must come first; otherwise the first one anywhere
    counts, as in a whole sequence); the answer ends where the model starts a new section of
    the format (a line ``### Instruction:``, ``### Input:`` or ``### Response:``); surrounding
    whitespace is stripped and Windows line ends become ``\\n``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str or None, got {type(prompt).__name__}")
    text = text.replace("\r\n", "\n")
    prompt = None if prompt is None else prompt.replace("\r\n", "\n")
    removed = prompt is not None and text.startswith(prompt)
    if removed:
        text = text[len(prompt) :]  # type: ignore[arg-type]
    text = text.split(ENDOFTEXT, 1)[0]
    if removed:
        stripped = text.lstrip()
        if stripped.startswith(RESPONSE_HEADER):
            text = stripped[len(RESPONSE_HEADER) :]
    else:
        _, header, after = text.partition(RESPONSE_HEADER)
        if header:
            text = after
    section = _SECTION.search(text)
    if section is not None:
        text = text[: section.start()]
    return text.strip()


def response_prompt(record: Mapping[str, Any], response_header: bool = True) -> str:
    """The text the model continues: :func:`format_input`, then (by default) the
    ``\\n\\n### Response:\\n`` header, exactly as it precedes the output in a training text."""
    prompt = format_input(record)
    return prompt + format_response({"output": ""}) if response_header else prompt


class Responses(list[str]):
    """The answers (a list of str), plus ``stopped[i]``: whether answer ``i`` ended because the
    model wrote end-of-text, rather than at the token limit."""

    def __init__(self, texts: Sequence[str], stopped: Sequence[bool]) -> None:
        super().__init__(texts)
        self.stopped = list(stopped)


def generate_responses(
    model: nn.Module,
    records: Sequence[Mapping[str, Any]],
    tokenizer: tiktoken.Encoding | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    *,
    eos_id: int = ENDOFTEXT_ID,
    response_header: bool = True,
    use_cache: bool = True,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> Responses:
    """Greedy answers of ``model`` to ``records`` (instruction/input/output dicts), in order.

    Each prompt is :func:`response_prompt` (with ``response_header=False``, only the
    instruction part, as Raschka's ch. 7 does, and the model writes the header itself). Prompts
    are decoded ``batch_size`` at a time with :func:`gpt2lib.generate.generate_batch` (left
    padding, KV cache unless ``use_cache=False``), shortest first, until ``eos_id`` or
    ``max_new_tokens``; each answer is :func:`extract_response` of the decoded text. Greedy
    decoding makes the answers a function of the weights: batched equals one at a time.
    ``dtype`` (e.g. ``torch.bfloat16``) decodes under autocast; ``progress`` shows a tqdm bar.
    The result is a list of answers that also records which ended at end-of-text
    (:class:`Responses`).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    tokenizer = tokenizer or get_tokenizer()
    prompts = [
        response_prompt(validate_record(r, i, "records"), response_header)
        for i, r in enumerate(records)
    ]
    ids = [tokenizer.encode(p, disallowed_special=()) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # stable: ties keep file order
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        import sys

        from tqdm import tqdm

        batches = tqdm(batches, desc="responses", unit="batch", file=sys.stderr)
    responses: list[str] = [""] * len(ids)
    stopped = [False] * len(ids)
    for batch in batches:
        new = generate_batch(
            model,
            [ids[i] for i in batch],
            max_new_tokens,
            eos_id=eos_id,
            use_cache=use_cache,
            dtype=dtype,
        )
        for i, tokens in zip(batch, new, strict=True):
            if tokens and tokens[-1] == eos_id:
                tokens, stopped[i] = tokens[:-1], True
            responses[i] = extract_response(prompts[i] + tokenizer.decode(tokens), prompts[i])
    return Responses(responses, stopped)


def write_responses(
    records: Sequence[Mapping[str, Any]],
    responses: Sequence[str],
    path: str | os.PathLike[str],
    key: str = "model_response",
) -> Path:
    """Write each record plus ``{key: response}`` as a JSON list to ``path``; return ``path``.

    The layout of the book's ``instruction-data-with-response.json`` (indent 4, UTF-8, the
    records' own fields first, in order). Atomic: written under a temporary name in the same
    folder and renamed into place, so a reader never sees half a file.
    """
    if len(records) != len(responses):
        raise ValueError(f"{len(records)} records but {len(responses)} responses")
    out = []
    for i, (record, response) in enumerate(zip(records, responses, strict=True)):
        if not isinstance(record, Mapping):
            raise TypeError(f"record {i} is not a mapping: {type(record).__name__}")
        if not isinstance(response, str):
            raise TypeError(f"response {i} must be a str, got {type(response).__name__}")
        out.append({**record, key: response})
    return atomic_write_text(path, json.dumps(out, indent=4, ensure_ascii=False) + "\n")
