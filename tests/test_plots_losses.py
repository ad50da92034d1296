"""plot_losses: loss curves against steps, tokens seen on a second axis, from a History or dict."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from gpt2lib.checkpoint import History  # noqa: E402
from gpt2lib.plots import plot_losses  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def history(val: list[float]) -> History:
    return History(
        steps=[0, 5, 10],
        tokens_seen=[0, 2560, 5120],
        examples_seen=[0, 10, 20],
        train_loss=[10.9, 7.0, 5.0],
        val_loss=val,
        lr=[4e-4] * 3,
    )


def test_curves_and_tokens_axis():
    ax = plot_losses(history([10.9, 7.5, 6.5]), title="Verdict")
    assert ax.get_title() == "Verdict"
    assert [line.get_label() for line in ax.get_lines()] == ["training", "validation"]
    assert list(ax.get_lines()[1].get_ydata()) == [10.9, 7.5, 6.5]
    (top,) = ax.child_axes
    assert top.get_xlabel() == "tokens seen"
    assert ax.get_xlabel() == "optimizer steps"


def test_dict_with_missing_validation():
    d = history([math.nan] * 3).to_dict()  # nan -> None, as in a manifest
    ax = plot_losses(d)
    assert [line.get_label() for line in ax.get_lines()] == ["training"]


def test_bad_history():
    with pytest.raises(ValueError, match="empty"):
        plot_losses(History())
    h = history([1.0, 2.0])
    with pytest.raises(ValueError, match="differ in length"):
        plot_losses(h)


def test_tokens_axis_extends_linearly_beyond_the_data():
    from gpt2lib.plots import _extrapolate

    steps, tokens = [0.0, 5.0, 10.0], [0.0, 2560.0, 5120.0]
    assert list(_extrapolate([-5.0, 2.5, 10.0, 20.0], steps, tokens)) == [
        -2560.0,
        1280.0,
        5120.0,
        10240.0,
    ]
