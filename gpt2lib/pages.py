"""What a chapter shows on its page besides printed output."""

from __future__ import annotations

import base64
import inspect
import io
import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# the PNG text chunk that holds a figure's smallest text height, in the image's own pixels
TEXT_SIZE_KEY = "gpt2lib smallest text px"


def glue(name: str, value: Any, display: bool = False) -> None:
    """Record ``value`` under ``name`` for the page's text (shown in the output if ``display``).

    A NumPy or PyTorch scalar is glued as the Python number it holds, so that the page can
    format it (``{glue:text}`name:.3f```).
    """
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # outside the book's build: nothing to glue into
        return
    myst_glue(name, value, display=display)


def show_source(obj: Any) -> None:
    """Display the source of ``obj`` (a function, class or method of the library) as highlighted
    Python, dedented (IPython's ``Code``)."""
    from IPython.display import Code, display

    display(Code(textwrap.dedent(inspect.getsource(obj)), language="python"))


def smallest_text_px(fig: Figure, dpi: float | None = None) -> float | None:
    """The font size, in pixels of the saved image, of the smallest visible text in ``fig``
    (titles, labels, tick labels, legends, annotations); ``None`` for a figure without text."""
    from matplotlib.text import Text

    fig.draw_without_rendering()  # lays the figure out: tick labels exist only after that
    sizes = [
        t.get_fontsize()
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip()
    ]
    return min(sizes) * (dpi or fig.dpi) / 72 if sizes else None


def figure_png(fig: Figure) -> str | None:
    """``fig`` as a base64 PNG (as IPython's inline backend shows it) whose text chunk
    :data:`TEXT_SIZE_KEY` records :func:`smallest_text_px`."""
    if not fig.axes and not fig.texts:
        return None  # an empty figure: nothing to show, as matplotlib's own display does
    size = smallest_text_px(fig)
    metadata = {TEXT_SIZE_KEY: f"{size:.2f}"} if size is not None else {}
    buffer = io.BytesIO()
    fig.canvas.print_figure(
        buffer, format="png", dpi=fig.dpi, bbox_inches="tight", metadata=metadata,
        facecolor=fig.get_facecolor(), edgecolor=fig.get_edgecolor(),
    )  # fmt: skip
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def label_figures() -> None:
    """From now on, show matplotlib figures in this IPython session through :func:`figure_png`.

    A chapter calls it once, in its setup cell. Outside IPython it does nothing.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from matplotlib.figure import Figure

    try:  # the inline backend registers its own PNG format once, when first imported: before ours
        import matplotlib_inline.backend_inline  # noqa: F401
    except ImportError:
        pass

    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)
