"""gpt2lib.pages.glue: numbers for the prose through myst-nb, and nothing where it is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from gpt2lib.pages import glue, show_source


def test_glue_records_the_value_for_myst_nb(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    import myst_nb

    monkeypatch.setattr(myst_nb, "glue", lambda *args, **kwargs: calls.append((args, kwargs)))
    glue("loss", 1.234)
    glue("acc", np.float64(0.875))  # as pandas hands it over: glued as a Python float
    glue("n", torch.tensor(4))
    assert calls == [(("loss", 1.234), {"display": False}), (("acc", 0.875), {"display": False}),
                     (("n", 4), {"display": False})]  # fmt: skip
    assert type(calls[1][0][1]) is float and type(calls[2][0][1]) is int


def test_without_myst_nb_glue_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # as in Colab: not installed
    assert glue("loss", 1.234) is None


def test_show_source_displays_the_library_code_highlighted(monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    from gpt2lib.model import GPTModel

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    show_source(GPTModel.embed)  # a method: indented in its class, shown dedented
    (code,) = shown
    assert isinstance(code, IPython.display.Code)
    assert code.data.startswith("def embed(self") and "self.drop(" in code.data


def test_a_figure_png_records_its_smallest_text() -> None:
    import io as _io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from gpt2lib.pages import TEXT_SIZE_KEY, figure_png, smallest_text_px

    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot([0, 1], [0, 1], label="line")
    ax.set_title("title", fontsize=12)
    ax.tick_params(labelsize=7)  # the smallest text: 7 pt = 9.72 px at 100 dpi
    ax.legend(fontsize=9)
    assert smallest_text_px(fig) == pytest.approx(7 * 100 / 72)
    image = Image.open(_io.BytesIO(__import__("base64").b64decode(figure_png(fig))))
    assert float(image.text[TEXT_SIZE_KEY]) == pytest.approx(9.72, abs=0.01)
    ax.tick_params(labelsize=11)  # now the legend's 9 pt is the smallest
    assert smallest_text_px(fig) == pytest.approx(9 * 100 / 72)
    plt.close(fig)
    empty = plt.figure()
    assert figure_png(empty) is None and smallest_text_px(empty) is None
    plt.close(empty)


def test_label_figures_outside_ipython_does_nothing() -> None:
    from gpt2lib.pages import label_figures

    assert label_figures() is None
