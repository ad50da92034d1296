"""Numbers for the book's prose: a chapter computes a value and ``glue``s it; the page's text
shows it with ``{glue:text}`name``` (myst-nb), so the prose cannot drift from the output.

Where myst-nb is not installed (a chapter opened in Colab, where there is no website to build),
gluing does nothing and the chapter runs the same.
"""

from __future__ import annotations

from typing import Any


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
