"""The book's plot helpers: they draw what they are given, return the Axes/Figure, reject bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gpt2lib.checkpoint import History  # noqa: E402
from gpt2lib.plots import (  # noqa: E402
    plot_activation_functions,
    plot_attention_heatmap,
    plot_classification_history,
    plot_confusion_matrix,
    plot_layer_gradients,
    plot_lora_update,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def causal_weights(T: int) -> torch.Tensor:
    scores = torch.arange(T * T, dtype=torch.float32).view(T, T) / 10
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


def test_heatmap_labels_values_and_blank_mask():
    tokens = ["The", " cat", " sat"]
    ax = plot_attention_heatmap(causal_weights(3), tokens, title="head 0")
    assert ax.get_title() == "head 0"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["The", "␣cat", "␣sat"]
    image = ax.get_images()[0]
    assert torch.allclose(torch.as_tensor(image.get_array().data), causal_weights(3))
    assert len(ax.texts) == 6  # the lower triangle only: 3 + 2 + 1 cells
    assert ax.texts[0].get_text() == "1.00"


def test_heatmap_numbers_only_where_cells_are_big_enough():
    fig, small = plt.subplots(figsize=(3.4, 3.4))
    plot_attention_heatmap(causal_weights(12), [f"t{i}" for i in range(12)], ax=small)
    assert len(small.texts) == 0  # 12 cells in under 3.4 inches: too small for "0.25"
    fig, ax = plt.subplots(figsize=(6.8, 6.8))
    plot_attention_heatmap(causal_weights(4), list("abcd"), ax=ax)
    assert len(ax.texts) == 10  # four cells in 6.8 inches: numbered
    plt.close("all")


def test_heatmap_without_annotations_on_given_axes():
    fig, ax = plt.subplots()
    assert plot_attention_heatmap(causal_weights(4), list("abcd"), ax=ax, annotate=False) is ax
    assert len(ax.texts) == 0


@pytest.mark.parametrize(
    ("weights", "tokens"),
    [
        (torch.ones(2, 3), ["a", "b"]),
        (torch.ones(3, 3), ["a", "b"]),
        (torch.ones(1, 3, 3), list("abc")),
    ],
)
def test_heatmap_rejects_bad_shapes(weights, tokens):
    with pytest.raises(ValueError, match="token|square"):
        plot_attention_heatmap(weights, tokens)


def test_activation_functions_and_derivatives():
    x = torch.linspace(-2, 2, 5)
    fig = plot_activation_functions(
        {"ReLU": torch.relu, "x^2": lambda t: t**2}, x=x, derivatives=True
    )
    left, right = fig.axes
    relu_line, square_line = left.get_lines()[:2]  # the curves, then the reference lines at 0
    assert (relu_line.get_label(), square_line.get_label()) == ("ReLU", "x^2")
    assert list(relu_line.get_ydata()) == [0.0, 0.0, 0.0, 1.0, 2.0]
    assert list(right.get_lines()[1].get_ydata()) == pytest.approx([-4.0, -2.0, 0.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="empty"):
        plot_activation_functions({})


def test_layer_gradients_log_scale():
    ax = plot_layer_gradients({"plain": [1e-6, 1e-3, 1e-1], "residual": [1e-2, 1e-2, 1e-1]})
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.get_lines()] == ["plain", "residual"]
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3]
    with pytest.raises(ValueError, match="empty"):
        plot_layer_gradients({})


def test_lora_update_draws_four_matrices_in_proportion():
    W, A, B = torch.randn(12, 10), torch.randn(12, 2), torch.randn(2, 10)
    fig = plot_lora_update(W, A, B, scaling=2.0)
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert [tuple(im.shape) for im in images] == [(12, 10), (12, 2), (2, 10), (12, 10)]
    torch.testing.assert_close(torch.as_tensor(images[3].data), W + 2.0 * A @ B)
    with pytest.raises(ValueError, match=r"A \(in, r\)"):
        plot_lora_update(W, torch.randn(10, 2), B, 1.0)


def test_classification_history_loss_and_accuracy_panels():
    h = History(steps=[0, 50], examples_seen=[0, 400], train_loss=[0.7, 0.3], val_loss=[0.7, 0.4])
    h.metrics = {"train_accuracy": [0.5, 0.9], "val_accuracy": [0.5, 0.85]}
    loss_ax, acc_ax = plot_classification_history(h).axes
    assert list(loss_ax.lines[0].get_xdata()) == [0, 400]
    assert list(acc_ax.lines[1].get_ydata()) == [0.5, 0.85]
    assert list(plot_classification_history(h, x="steps").axes[0].lines[0].get_xdata()) == [0, 50]
    with pytest.raises(ValueError, match="accuracy_eval"):
        plot_classification_history(History())
    with pytest.raises(ValueError, match="x must be"):
        plot_classification_history(h, x="epochs")


def test_confusion_matrix_annotates_counts():
    ax = plot_confusion_matrix(torch.tensor([[140, 10], [5, 145]]), ["ham", "spam"])
    assert sorted(t.get_text() for t in ax.texts) == ["10", "140", "145", "5"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    with pytest.raises(ValueError, match=r"expected \(3, 3\)"):
        plot_confusion_matrix(torch.zeros(2, 2), ["a", "b", "c"])
