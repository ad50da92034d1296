"""The attention heatmap: it draws what it is given, returns the Axes, rejects bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gpt2lib.plots import (  # noqa: E402
    plot_attention_heatmap,
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
