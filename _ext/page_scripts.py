"""A Sphinx extension of the book's: each page lists each of its scripts once.

jupyter-book sets sphinx-thebe up twice, so every page carried its inline script twice, and the
second copy failed in the browser ("Identifier 'THEBE_JS_URL' has already been declared"): a
console error on every page. This drops repeats of a script (same file, same inline body).
"""

from __future__ import annotations

from typing import Any


def _once(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # an inline script's file name is None or "", depending on who added it
        key = (getattr(script, "filename", None) or "", getattr(script, "attributes", {}).get("body"))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Any) -> dict[str, Any]:
    # early: html-page-context stops at the first handler that returns a template name
    app.connect("html-page-context", _once, priority=1)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
