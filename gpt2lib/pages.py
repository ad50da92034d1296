"""What a chapter shows on its page besides printed output.

- :func:`glue`: numbers for the prose. A chapter computes a value and glues it; the page's text
  shows it with ``{glue:text}`name``` (myst-nb), so the prose cannot drift from the output.
  Where myst-nb is not installed (a chapter opened in Colab, where there is no website to
  build), gluing does nothing and the chapter runs the same.
- :func:`show_source`: the library's own code, highlighted, with its indentation, instead of a
  second copy pasted into the chapter.
"""

from __future__ import annotations

import inspect
import textwrap
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


def show_source(obj: Any) -> None:
    """Display the source of ``obj`` (a function, class or method of the library) as highlighted
    Python, dedented (IPython's ``Code``)."""
    from IPython.display import Code, display

    display(Code(textwrap.dedent(inspect.getsource(obj)), language="python"))
