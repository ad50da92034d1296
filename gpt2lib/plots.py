"""Small matplotlib helpers for the book's figures."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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
        1, ncols, figsize=(PAGE_WIDTH * ncols / 2, 3.2), layout="constrained", squeeze=False
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
    for ax, title, ylabel in zip(axes[0], titles, ylabels, strict=True):
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.axvline(0.0, color="grey", linewidth=0.5)
        ax.set_title(title)
        ax.set_xlabel("x")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left")  # one legend: the panels share their colours
    return fig


def plot_layer_gradients(
    gradients: Mapping[str, Sequence[float]],
    ax: Axes | None = None,
    title: str = "Gradient magnitude per layer",
) -> Axes:
    """Line plot, log scale, of one number per layer (e.g. mean |grad|) for several models."""
    if not gradients:
        raise ValueError("gradients is empty: pass at least one name -> per-layer values")
    ax = _new_axes(ax, (PAGE_WIDTH * 0.9, 3.6))
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


def plot_lora_update(
    weight: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    scaling: float,
    title: str = "LoRA: a frozen matrix plus a trainable low-rank product",
) -> Figure:
    """Draw ``W + scaling * A @ B = W'`` as heatmaps, each matrix in its true proportions.

    Matrices are drawn as they act on row vectors (``x @ W``): ``weight`` (in, out), ``A``
    (in, r), ``B`` (r, out). For an ``nn.Linear`` pass ``linear.weight.T``. One symmetric colour
    scale is shared by all four panels.
    """
    import matplotlib.pyplot as plt

    W, A, B = (torch.as_tensor(t).detach().float().cpu() for t in (weight, A, B))
    if W.dim() != 2 or A.shape != (W.shape[0], A.shape[-1]) or B.shape != (A.shape[1], W.shape[1]):
        raise ValueError(
            f"need weight (in, out), A (in, r), B (r, out); got {tuple(W.shape)}, "
            f"{tuple(A.shape)}, {tuple(B.shape)}"
        )
    merged = W + scaling * A @ B
    n_in, n_out, r = W.shape[0], W.shape[1], A.shape[1]
    panels: list[tuple[str, torch.Tensor | None]] = [
        (f"W (frozen)\n{n_in} × {n_out}", W),
        ("+  α/r ·", None),
        (f"A\n{n_in} × {r}", A),
        ("·", None),
        (f"B\n{r} × {n_out}", B),
        ("=", None),
        (f"W + (α/r)·A·B\n{n_in} × {n_out}", merged),
    ]
    widths = [float(m.shape[1]) if m is not None else max(1.5, 0.25 * n_out) for _, m in panels]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(PAGE_WIDTH, 2.9), width_ratios=widths, layout="constrained"
    )
    limit = float(max(t.abs().max() for t in (W, A, B, merged))) or 1.0
    image = None
    for ax, (label, matrix) in zip(axes, panels, strict=True):
        if matrix is None:
            ax.text(0.5, 0.5, label, ha="center", va="center", fontsize=12)
            ax.axis("off")
            continue
        image = ax.imshow(matrix.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=list(axes), fraction=0.02, pad=0.01, label="value")
    fig.suptitle(title, fontsize=11)
    return fig


def plot_classification_history(history: object, x: str = "examples") -> Figure:
    """Loss and accuracy of a classifier's training, train and validation, side by side.

    ``history`` is a :class:`gpt2lib.train.History` recorded with an ``eval_fn`` that returns
    ``{"accuracy": ...}``; ``x`` is ``"examples"`` (examples seen) or ``"steps"``.
    """
    import matplotlib.pyplot as plt

    if x not in ("examples", "steps"):
        raise ValueError(f"x must be 'examples' or 'steps', got {x!r}")
    metrics = getattr(history, "metrics", {})
    if "train_accuracy" not in metrics:
        raise ValueError("history has no train_accuracy: train with eval_fn=accuracy_eval")
    xs = history.examples_seen if x == "examples" else history.steps  # type: ignore[attr-defined]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.2), layout="constrained")
    ax_loss.plot(xs, history.train_loss, label="training")  # type: ignore[attr-defined]
    ax_loss.plot(xs, history.val_loss, linestyle="-.", label="validation")  # type: ignore[attr-defined]
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_title("Loss")
    ax_acc.plot(xs, metrics["train_accuracy"], label="training")
    if "val_accuracy" in metrics:
        ax_acc.plot(xs, metrics["val_accuracy"], linestyle="-.", label="validation")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0.0, 1.02)
    ax_acc.set_title("Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("examples seen" if x == "examples" else "optimizer steps")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def plot_confusion_matrix(
    matrix: torch.Tensor,
    labels: Sequence[str],
    ax: Axes | None = None,
    title: str = "Confusion matrix",
) -> Axes:
    """Heatmap of a (K, K) confusion matrix (row = true class, column = predicted), with counts."""
    matrix = torch.as_tensor(matrix).detach().cpu()
    k = len(labels)
    if matrix.shape != (k, k):
        raise ValueError(f"matrix has shape {tuple(matrix.shape)}, expected ({k}, {k}) for labels")
    ax = _new_axes(ax, (4.2, 3.6))
    ax.imshow(matrix.numpy(), cmap="Blues", vmin=0)
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = float(matrix.max()) / 2
    for i in range(k):
        for j in range(k):
            value = int(matrix[i, j])
            color = "white" if value > threshold else "black"
            ax.text(j, i, f"{value}", ha="center", va="center", fontsize=12, color=color)
    return ax


def plot_losses(
    history: object,
    ax: Axes | None = None,
    title: str = "Training and validation loss",
) -> Axes:
    """Training and validation loss against optimizer steps, with tokens seen on a top axis.

    ``history`` is a :class:`gpt2lib.train.History` or its :meth:`~gpt2lib.train.History.to_dict`
    form (e.g. the ``history`` of a mini model's manifest). A validation curve that is all
    ``nan``/``None`` (trained without a validation loader) is left out.
    """
    import numpy as np

    def column(name: str) -> list[float]:
        values = history[name] if isinstance(history, Mapping) else getattr(history, name)
        return [float("nan") if v is None else float(v) for v in values]

    steps, tokens = column("steps"), column("tokens_seen")
    train_loss, val_loss = column("train_loss"), column("val_loss")
    if not steps:
        raise ValueError("history is empty: nothing to plot")
    if not len(steps) == len(tokens) == len(train_loss) == len(val_loss):
        raise ValueError("history's steps, tokens_seen, train_loss and val_loss differ in length")
    ax = _new_axes(ax, (6.5, 3.8))
    ax.plot(steps, train_loss, label="training")
    if not all(np.isnan(val_loss)):
        ax.plot(steps, val_loss, linestyle="-.", label="validation")
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    s, t = np.asarray(steps, dtype=float), np.asarray(tokens, dtype=float)
    if len(s) > 1 and np.all(np.diff(s) > 0) and np.all(np.diff(t) > 0):
        from matplotlib.ticker import EngFormatter

        top = ax.secondary_xaxis(
            "top", functions=(lambda x: _extrapolate(x, s, t), lambda x: _extrapolate(x, t, s))
        )
        top.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1.2M
        top.set_xlabel("tokens seen")
    return ax


def _extrapolate(x: object, xp: object, fp: object) -> object:
    """Piecewise-linear interpolation that continues the end segments' slopes beyond the data."""
    import numpy as np

    x, xp, fp = np.asarray(x, dtype=float), np.asarray(xp, dtype=float), np.asarray(fp, dtype=float)
    y = np.interp(x, xp, fp)
    first, last = (fp[1] - fp[0]) / (xp[1] - xp[0]), (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    y = np.where(x < xp[0], fp[0] + (x - xp[0]) * first, y)
    return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * last, y)
