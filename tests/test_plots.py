"""The book's plot helpers: they draw what they are given, return the Axes/Figure, reject bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gpt2lib.plots import (  # noqa: E402
    plot_activation_functions,
    plot_attention_heatmap,
    plot_layer_gradients,
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
