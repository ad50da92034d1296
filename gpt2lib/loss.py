"""The language-modelling loss: next-token cross-entropy, of a batch and over a loader."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .model import eval_mode

LossFn = Callable[[nn.Module, Any, torch.device], torch.Tensor]


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy of (B, T, V) ``logits`` against (B, T) ``targets``.

    Positions whose target is ``ignore_index`` (padding, masked prompts) do not count.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, T, V) and targets (B, T), got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    # float32 for the softmax even under bf16 autocast
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index
    )


def calc_loss_batch(model: nn.Module, batch: Any, device: torch.device | str) -> torch.Tensor:
    """The next-token loss of one ``(inputs, targets)`` batch: a scalar tensor that can be
    backpropagated (the default ``loss_fn`` of :func:`gpt2lib.train.train`)."""
    inputs, targets = batch
    inputs, targets = inputs.to(device), targets.to(device)
    return lm_loss(model(inputs), targets)


def calc_loss_kept(
    model: nn.Module, batch: Any, device: torch.device | str, ignore_index: int = -100
) -> torch.Tensor:
    """:func:`calc_loss_batch`'s loss, with the output layer run only at the positions whose
    target counts (``model.head(model.hidden(inputs)[keep])``), not at padding or masked prompt
    tokens. ``model`` is a :class:`~gpt2lib.model.GPTModel` (or a wrapper with those two methods).

    The output layer (C x 50,257) is most of the arithmetic of a small model, so when the loss
    counts a few positions in each row (the answers of instruction data with the prompt
    masked) this is several times faster. The value is the same up to float rounding.
    """
    inputs, targets = batch
    inputs, targets = inputs.to(device), targets.to(device)
    keep = targets != ignore_index  # (B, T)
    logits = model.head(model.hidden(inputs)[keep])  # (N, vocab_size)
    return F.cross_entropy(logits.float(), targets[keep])


def calc_loss_loader(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device | str,
    num_batches: int | None = None,
    loss_fn: LossFn = calc_loss_batch,
) -> float:
    """Mean batch loss over the first ``num_batches`` batches of ``loader`` (all by default).

    Runs in eval mode (no dropout) without gradients and restores the model's mode. An empty
    loader gives ``nan``.
    """
    if num_batches is not None and num_batches <= 0:
        raise ValueError(f"num_batches must be positive or None, got {num_batches}")
    total, count = 0.0, 0
    with eval_mode(model), torch.no_grad():
        for batch in itertools.islice(loader, num_batches):
            total += loss_fn(model, batch, torch.device(device)).item()
            count += 1
    return total / count if count else float("nan")


def perplexity(loss: float | torch.Tensor) -> float | torch.Tensor:
    """``exp(loss)``: the number of tokens the model is, on average, choosing among."""
    return torch.exp(loss) if isinstance(loss, torch.Tensor) else math.exp(loss)
