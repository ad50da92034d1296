"""Instruction tuning: chapter 6's recipe, training run and answers to the test set."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import History
from .data.instructions import (
    RESPONSE_HEADER,
    InstructionDataset,
    collate,
    format_input,
    format_response,
    load_instructions,
    split_instructions,
    validate_record,
)
from .files import atomic_write_text
from .generate import generate_batch
from .loss import calc_loss_kept
from .tokenizer import ENDOFTEXT_ID, get_tokenizer
from .train import LoopCaps, TrainConfig, train

if TYPE_CHECKING:
    import tiktoken

@dataclass(frozen=True)
class Recipe:
    """The settings of an instruction-tuning run: the book's by default, :meth:`mini` for the mini model.

    ``train_records``: how many of the training records to use (None: all); the run is
    ``epochs`` passes over them, or ``max_steps`` steps if that comes first.
    """

    model: str = "355M"
    train_records: int | None = None
    batch_size: int = 8
    epochs: int = 2
    max_steps: int | None = None
    lr: float = 5e-5
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine"] = "constant"  # after the warm-up
    min_lr: float = 0.0  # where the cosine schedule ends
    weight_decay: float = 0.1
    grad_clip: float | None = None  # max global gradient norm (the book does not clip)
    mask_prompt: bool = False  # leave the prompt's tokens out of the loss (the book keeps them)
    eval_every: int = 5
    eval_batches: int = 5
    max_new_tokens: int = 256
    seed: int = 123

    @classmethod
    def mini(cls) -> Recipe:
        """The mini model's recipe for the book's data: all 935 records, eight epochs at 2e-3
        after a short warm-up, the loss on the answers only, answers of up to 64 tokens (the
        mini model has 7 M parameters and a 256-token context). ``Recipe()`` is the book's:
        GPT-2 Medium, two epochs at 5e-5."""
        return cls(
            model="mini-shakespeare", epochs=8, lr=2e-3, warmup_steps=8, mask_prompt=True,
            eval_every=116, eval_batches=2, max_new_tokens=64,
        )  # fmt: skip

    @classmethod
    def tasks(cls) -> Recipe:
        """The book's model on the procedural tasks of :mod:`gpt2lib.data.tasks` (chapter 6,
        section 6): GPT-2 Medium at the book's rate for one epoch, answers of up to 16 tokens
        (the longest test answer has 8)."""
        return cls(epochs=1, eval_every=100, max_new_tokens=16)

    @classmethod
    def mini_tasks(cls) -> Recipe:
        """The mini model on the procedural tasks: 3,000 steps of 16 records (6.7 epochs), the
        loss on the answers only, at 3e-3 falling to 3e-4 on a cosine, gradients clipped to
        norm 1. With half the steps, runs that differed only in float rounding each learned
        another subset of the copying kinds (0.37 to 0.83 exact match); with 3,000, every kind
        but the two comparisons (0.88 to 0.94 in three runs). In between it depends on the run:
        with AdamW's fused kernel, two seeds reached 0.71 and 0.82 at 2,000 steps; at 2,400,
        three seeds on one thread 0.83 to 0.84, and seed 123 on two threads 0.79. Tuning only
        the body, with the token embedding frozen, is faster per step but reached 0.24."""
        return cls(
            model="mini-shakespeare", batch_size=16, epochs=7, max_steps=3000, lr=3e-3,
            warmup_steps=10, schedule="cosine", min_lr=3e-4, grad_clip=1.0, mask_prompt=True,
            eval_every=375, eval_batches=2, max_new_tokens=16,
        )  # fmt: skip

    def capped(self, caps: LoopCaps) -> Recipe:
        """This recipe with its loop counts (steps, evaluation batches, new tokens) under
        ``caps``, as a chapter's settings cell applies a rehearsal's caps."""
        return dataclasses.replace(
            self,
            max_steps=caps.limit(self.max_steps, "steps"),
            eval_batches=caps.limit(self.eval_batches, "batches"),  # type: ignore[arg-type]
            max_new_tokens=caps.limit(self.max_new_tokens, "new_tokens"),  # type: ignore[arg-type]
        )

    def train_config(self, progress: bool = True) -> TrainConfig:
        """The :class:`~gpt2lib.train.TrainConfig` of the run: AdamW after the warm-up at a
        constant learning rate and without gradient clipping, as the book, unless the recipe
        says otherwise."""
        return TrainConfig(
            epochs=self.epochs, max_steps=self.max_steps, lr=self.lr, min_lr=self.min_lr,
            warmup_steps=self.warmup_steps, schedule=self.schedule,
            weight_decay=self.weight_decay, grad_clip=self.grad_clip, eval_every=self.eval_every,
            eval_batches=self.eval_batches, seed=self.seed, progress=progress,
        )  # fmt: skip


def instruction_loaders(
    train_data: Sequence[Mapping[str, Any]],
    val_data: Sequence[Mapping[str, Any]],
    recipe: Recipe,
    context_length: int,
    tokenizer: Any = None,
) -> tuple[DataLoader, DataLoader]:
    """Shuffled training batches (last incomplete one dropped) of the recipe's records, and
    validation batches, padded and masked by :func:`collate`, cut to ``context_length``."""
    tokenizer = tokenizer or get_tokenizer()
    collate_fn = partial(
        collate, allowed_max_length=context_length, mask_prompt=recipe.mask_prompt
    )
    records = train_data[: recipe.train_records]
    train_loader = DataLoader(
        InstructionDataset(records, tokenizer), batch_size=recipe.batch_size, shuffle=True,
        drop_last=True, collate_fn=collate_fn,
    )  # fmt: skip
    val_loader = DataLoader(
        InstructionDataset(val_data, tokenizer), batch_size=recipe.batch_size,
        collate_fn=collate_fn,
    )  # fmt: skip
    return train_loader, val_loader


def instruction_tune(
    model: nn.Module,
    train_data: Sequence[Mapping[str, Any]],
    val_data: Sequence[Mapping[str, Any]],
    recipe: Recipe,
    progress: bool = True,
) -> History:
    """Fine-tune every weight of ``model`` on ``train_data`` with ``recipe``; return the history
    (next-token loss on the training and validation batches).

    The loss is :func:`~gpt2lib.loss.calc_loss_kept`: the output layer runs only where a
    target counts, so padding (and a masked prompt) costs no output-layer arithmetic.
    """
    loaders = instruction_loaders(train_data, val_data, recipe, model.cfg.context_length)
    return train(model, *loaders, recipe.train_config(progress), loss_fn=calc_loss_kept)


def _pretrained(recipe: Recipe, device: torch.device | str | None) -> nn.Module:
    """The recipe's pretrained model on ``device`` (default: the best available), after seeding
    with the recipe's seed, as both one-call runs below start."""
    from .device import get_device
    from .weights import load_pretrained

    torch.manual_seed(recipe.seed)
    model, _ = load_pretrained(recipe.model)
    return model.to(device or get_device())


def make_responses_file(
    path: str | os.PathLike[str],
    recipe: Recipe,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Path:
    """Chapter 6 in one call: load the pretrained model, tune it on the book's training split,
    answer the test split, and write the responses file to ``path``; return ``path``."""
    train_data, val_data, test_data = split_instructions(load_instructions())
    model = _pretrained(recipe, device)
    instruction_tune(model, train_data, val_data, recipe, progress)
    responses = generate_responses(
        model, test_data, max_new_tokens=recipe.max_new_tokens, batch_size=8, progress=progress
    )
    return write_responses(test_data, responses, path)


def make_task_responses_file(
    path: str | os.PathLike[str],
    recipe: Recipe,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Path:
    """Chapter 6's procedural run in one call: answer the test split of
    :func:`gpt2lib.data.tasks.make_splits` with the pretrained model, tune it on the training
    split, answer again, and write each test record with ``model_response`` (after tuning) and
    ``base_response`` (before) to ``path``; return ``path``."""
    from .data.tasks import make_splits

    train_data, val_data, test_data = make_splits()
    model = _pretrained(recipe, device)

    def answers() -> list[str]:
        return generate_responses(
            model, test_data, max_new_tokens=recipe.max_new_tokens, batch_size=32
        )

    before = answers()
    instruction_tune(model, train_data, val_data, recipe, progress)
    after = [{**r, "model_response": a} for r, a in zip(test_data, answers(), strict=True)]
    return write_responses(after, before, path, key="base_response")


# --- answers ---------------------------------------------------------------------------------

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
    progress: bool = False,
) -> Responses:
    """Greedy answers of ``model`` to ``records`` (instruction/input/output dicts), in order.

    Each prompt is :func:`response_prompt` (with ``response_header=False``, only the
    instruction part, as Raschka's ch. 7 does, and the model writes the header itself). Prompts
    are decoded ``batch_size`` at a time with :func:`gpt2lib.generate.generate_batch` (left
    padding, KV cache unless ``use_cache=False``), shortest first, until ``eos_id`` or
    ``max_new_tokens``; each answer is :func:`extract_response` of the decoded text. Greedy
    decoding makes the answers a function of the weights: batched equals one at a time.
    ``progress`` shows a tqdm bar.
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
