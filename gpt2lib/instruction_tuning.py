"""Instruction tuning end to end: chapter 6's recipe as one call.

Chapter 6 builds it step by step: the book's split of the instruction data, loaders that pad
and mask (:func:`~gpt2lib.data.instructions.collate`), full fine-tuning with
:func:`gpt2lib.train.train`, greedy answers to the test instructions
(:func:`~gpt2lib.instruct.generate_responses`), and the responses file the judge of chapter 7
reads. :class:`Recipe` holds the settings (the book's, or the offline profile's for the mini
model), :func:`instruction_tune` trains, and :func:`make_responses_file` runs all of it, so that
chapter 7 can make chapter 6's file in a fresh runtime with the very same calls.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from .data.instructions import InstructionDataset, collate, load_instructions, split_instructions
from .history import History
from .instruct import generate_responses, write_responses
from .loss import calc_loss_kept
from .profile import LoopCaps, choose
from .tokenizer import get_tokenizer
from .train import TrainConfig, train


@dataclass(frozen=True)
class Recipe:
    """The settings of an instruction-tuning run (the book's by default, see :meth:`for_profile`).

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
    def for_profile(cls) -> Recipe:
        """The book's recipe (GPT-2 Medium, all 935 records, two epochs at 5e-5), or offline
        the mini model's: all 935 records, eight epochs at 2e-3 after a short warm-up, the loss
        on the answers only, answers of up to 64 tokens (the mini model has 7 M parameters and
        a 256-token context)."""
        return choose(
            full=cls(),
            offline=cls(
                model="mini-shakespeare", epochs=8, lr=2e-3, warmup_steps=8, mask_prompt=True,
                eval_every=116, eval_batches=2, max_new_tokens=64,
            ),
        )  # fmt: skip

    @classmethod
    def for_tasks(cls) -> Recipe:
        """The recipe for the procedural tasks of :mod:`gpt2lib.data.tasks` (chapter 6,
        section 6): GPT-2 Medium at the book's rate for one epoch, or offline the mini model for
        3,000 steps of 16 records (6.7 epochs), the loss on the answers only, at 3e-3 falling
        to 3e-4 on a cosine, gradients clipped to norm 1; answers of up to 16 tokens (the
        longest test answer has 8). With half the steps, runs that differed only in float
        rounding each learned another subset of the copying kinds (0.37 to 0.83 exact match);
        with 3,000, every kind but the two comparisons (0.88 to 0.94 in three runs). In between
        it depends on the run: with AdamW's fused kernel, two seeds reached 0.71 and 0.82 at
        2,000 steps; at 2,400, three seeds on one thread 0.83 to 0.84, and seed 123 on two
        threads 0.79, with two copying kinds learned in part. Tuning only the body, with the
        token embedding frozen, is faster per step but reached 0.24 at 3,000 steps."""
        return choose(
            full=cls(epochs=1, eval_every=100, max_new_tokens=16),
            offline=cls(
                model="mini-shakespeare", batch_size=16, epochs=7, max_steps=3000, lr=3e-3,
                warmup_steps=10, schedule="cosine", min_lr=3e-4, grad_clip=1.0,
                mask_prompt=True, eval_every=375, eval_batches=2, max_new_tokens=16,
            ),
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
    recipe: Recipe | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Path:
    """Chapter 6 in one call: load the pretrained model, tune it on the book's training split,
    answer the test split, and write the responses file to ``path``; return ``path``."""
    recipe = recipe or Recipe.for_profile()
    train_data, val_data, test_data = split_instructions(load_instructions())
    model = _pretrained(recipe, device)
    instruction_tune(model, train_data, val_data, recipe, progress)
    responses = generate_responses(
        model, test_data, max_new_tokens=recipe.max_new_tokens, batch_size=8, progress=progress
    )
    return write_responses(test_data, responses, path)


def make_task_responses_file(
    path: str | os.PathLike[str],
    recipe: Recipe | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Path:
    """Chapter 6's procedural run in one call: answer the test split of
    :func:`gpt2lib.data.tasks.make_splits` with the pretrained model, tune it on the training
    split, answer again, and write each test record with ``model_response`` (after tuning) and
    ``base_response`` (before) to ``path``; return ``path``."""
    from .data.tasks import make_splits

    recipe = recipe or Recipe.for_tasks()
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
