"""The page's figure width, and the attention heatmap that chapters 1 and 4 draw."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# The book's text column is about 688 px wide on a desktop screen; at matplotlib's 100 dpi a
# figure this wide is shown at its own size, so a 10-point label stays about 14 px tall on screen.
# A wider figure is shrunk to fit, and its text with it (scripts/check_pages.py measures that).
PAGE_WIDTH = 6.8  # inches
ANNOTATE_CELL = 0.4  # inches: the smallest heatmap cell that holds a readable "0.25"


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def plot_attention_heatmap(
    weights: torch.Tensor,
    tokens: Sequence[str],
    ax: Axes | None = None,
    title: str = "Attention weights",
    annotate: bool | None = None,
    cmap: str = "Blues",
) -> Axes:
    """Draw a (T, T) attention matrix: row = query token, column = key token it attends to.

    ``tokens`` label both axes (a leading space, as GPT-2's BPE keeps it, is shown as ``␣``).
    With ``annotate`` each cell shows its weight to two decimals; masked cells (above the
    diagonal, weight exactly 0) stay blank. By default (``None``) cells are annotated only where
    they are at least :data:`ANNOTATE_CELL` wide, so that the numbers can be read.
    """
    weights = torch.as_tensor(weights).detach().float().cpu()
    if weights.dim() != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(
            f"weights must be a square (T, T) matrix, got shape {tuple(weights.shape)}"
        )
    if len(tokens) != weights.shape[0]:
        raise ValueError(f"got {len(tokens)} token labels for a {weights.shape[0]}-token matrix")
    ax = _new_axes(ax, (PAGE_WIDTH * 0.8, PAGE_WIDTH * 0.7))
    if annotate is None:
        box = ax.get_position()  # figure fraction: an upper bound of the final axes' size
        width, height = ax.figure.get_size_inches()
        annotate = min(box.width * width, box.height * height) / len(tokens) >= ANNOTATE_CELL
    labels = [t.replace(" ", "␣") if t.startswith(" ") else t for t in tokens]
    image = ax.imshow(weights.numpy(), cmap=cmap, vmin=0.0, vmax=1.0)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="weight")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=90)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("key (attended-to token)")
    ax.set_ylabel("query (attending token)")
    ax.set_title(title)
    if annotate:
        for i in ticks:
            for j in ticks:
                w = float(weights[i, j])
                if j > i and w == 0.0:
                    continue
                color = "white" if w > 0.6 else "black"
                ax.text(j, i, f"{w:.2f}", ha="center", va="center", fontsize=8, color=color)
    return ax
