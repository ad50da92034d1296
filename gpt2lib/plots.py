"""Small matplotlib helpers for the book's figures.

Each function draws on an ``ax`` it is given (or on a new figure) and returns the Axes or
Figure, so a chapter can combine panels and decide when to ``plt.show()``. matplotlib is
imported inside the functions: ``import gpt2lib`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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
    annotate: bool = True,
    cmap: str = "Blues",
) -> Axes:
    """Draw a (T, T) attention matrix: row = query token, column = key token it attends to.

    ``tokens`` label both axes (a leading space, as GPT-2's BPE keeps it, is shown as ``␣``).
    With ``annotate`` each cell shows its weight to two decimals; masked cells (above the
    diagonal, weight exactly 0) stay blank.
    """
    weights = torch.as_tensor(weights).detach().float().cpu()
    if weights.dim() != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(
            f"weights must be a square (T, T) matrix, got shape {tuple(weights.shape)}"
        )
    if len(tokens) != weights.shape[0]:
        raise ValueError(f"got {len(tokens)} token labels for a {weights.shape[0]}-token matrix")
    ax = _new_axes(ax, (6.0, 5.0))
    labels = [t.replace(" ", "␣") if t.startswith(" ") else t for t in tokens]
    image = ax.imshow(weights.numpy(), cmap=cmap, vmin=0.0, vmax=1.0)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="weight")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
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
                ax.text(j, i, f"{w:.2f}", ha="center", va="center", fontsize=7, color=color)
    return ax


def plot_activation_functions(
    functions: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    x: torch.Tensor | None = None,
    derivatives: bool = False,
) -> Figure:
    """Plot each activation function (and, with ``derivatives``, its slope) over ``x``.

    ``functions`` maps a legend name to an elementwise function, e.g.
    ``{"GELU": F.gelu, "ReLU": torch.relu}``; ``x`` defaults to 200 points in [-4, 4].
    """
    import matplotlib.pyplot as plt

    if not functions:
        raise ValueError("functions is empty: pass at least one name -> function")
    x = torch.linspace(-4.0, 4.0, 200) if x is None else torch.as_tensor(x, dtype=torch.float32)
    ncols = 2 if derivatives else 1
    fig, axes = plt.subplots(
        1, ncols, figsize=(5.0 * ncols, 3.6), layout="constrained", squeeze=False
    )
    for name, fn in functions.items():
        xg = x.detach().clone().requires_grad_(derivatives)
        y = fn(xg)
        axes[0, 0].plot(x.numpy(), y.detach().numpy(), label=name)
        if derivatives:
            (slope,) = torch.autograd.grad(y.sum(), xg)
            axes[0, 1].plot(x.numpy(), slope.numpy(), label=name)
    titles = ["Activation", "Derivative"][:ncols]
    ylabels = ["f(x)", "f'(x)"][:ncols]
    legend_locs = ["upper left", "center left"][:ncols]  # where the curves leave room
    for ax, title, ylabel, loc in zip(axes[0], titles, ylabels, legend_locs, strict=True):
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.axvline(0.0, color="grey", linewidth=0.5)
        ax.set_title(title)
        ax.set_xlabel("x")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc=loc)
    return fig


def plot_layer_gradients(
    gradients: Mapping[str, Sequence[float]],
    ax: Axes | None = None,
    title: str = "Gradient magnitude per layer",
) -> Axes:
    """Line plot, log scale, of one number per layer (e.g. mean |grad|) for several models."""
    if not gradients:
        raise ValueError("gradients is empty: pass at least one name -> per-layer values")
    ax = _new_axes(ax, (6.0, 3.6))
    for name, values in gradients.items():
        layers = range(1, len(values) + 1)
        ax.plot(layers, list(values), marker="o", label=name)
    ax.set_xticks(range(1, max(len(v) for v in gradients.values()) + 1))
    ax.set_yscale("log")
    ax.set_xlabel("layer (1 = closest to the input)")
    ax.set_ylabel("mean |gradient| of the weights")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return ax
