"""Check the built website the way a reader sees it, and screenshot every page.

    python scripts/check_pages.py                 # _build/html -> build/screenshots/*-{1280,390}.png
    python scripts/check_pages.py --no-screenshots

Reads every chapter page of ``_build/html`` (built by ``scripts/setup.sh``) and fails, naming
the page and what it found, on:

- a raw markdown table: a line ``| a | b |`` in the page's text (outside code), where a table
  should have been rendered (the benchmark tables of the appendix once were);
- a code cell whose printed output is split over several boxes (its stdout written in pieces
  and shown as one box per piece, with labels landing in the wrong box);
- an output figure without alt text, or whose alt text is only its hashed file name;
- a loopback address with a port (``127.0.0.1:PORT``) anywhere on the page: a throwaway server
  of the run that made the outputs, never something a reader can use;
- a run of three or more blank lines in an output;
- an escaped newline (a literal ``\\n``) in a table cell, unless the cell is one token shown
  as its quoted repr (``'\\n'``, the newline token, on purpose);
- a MyST directive or role left as text outside code (```` ```{exercise} ````,
  ``{solution-start}``, ``{glue:text}``...): an extension that is not loaded, or a typo.

Then it serves the site on a loopback port, as a host would (the live widgets need HTTP), opens
each page in headless Chromium (Debian's ``chromium`` package, driven through its DevTools
protocol, :mod:`tools.browser`) at 1280 px and at 390 px, a phone's width, and fails on

- a page wider than the screen (the whole page would scroll sideways);
- a request to another host (a script, a style sheet, a font from a CDN): the site serves all
  it needs itself, so that it works offline and tells no third party who reads it;
- an error in the browser's console (a script that fails, a file that is missing);
- a figure whose smallest text is shown under :data:`MIN_TEXT_PX` pixels tall: each figure's PNG
  records its smallest font size in its own pixels (``gpt2lib.pages.label_figures``), and the
  browser says how much the page scales the image; a figure without that record fails too.

Dropdowns (the exercises' solutions) are opened first, so that the checks and the screenshots
see them. It takes a full-page screenshot of each, so that a person can look at what the checks
cannot judge. CI runs it after the book is built.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tools/, the project's own tooling (not installed)

from tools.browser import Chromium, find_chromium, foreign_requests, serve  # noqa: E402

# a table row left as text: | a | b | (the separator row's dashes may have become typographic)
RAW_ROW = re.compile(r"^[ \t]*\|(?:[^|\n]*\|){2,}[ \t]*$", re.MULTILINE)
HASHED = re.compile(r"^[0-9a-f]{16,}\.(png|jpe?g|svg)$")
LOOPBACK = re.compile(r"(?<![\d.])127(?:\.\d{1,3}){3}:\d+|\[::1\]:\d+")
BLANK_RUN = re.compile(r"\n[ \t]*\n[ \t]*\n[ \t]*\n")  # three blank lines in a row
WIDTHS = (1280, 390)  # a desktop and a phone
MIN_TEXT_PX = 9.0  # the smallest figure text, in screen pixels, that reads without zooming
RAW_MYST = re.compile(  # a directive fence or a role, as MyST source
    r"`{3,}\s*\{[\w:-]+\}"
    r"|\{(?:glue(?::\w+)?|exercise|solution(?:-start|-end)?|cite\w*|numref|ref|doc)\}`"
)
TOKEN_LABEL = re.compile(r"^'[^']{0,12}'$")  # a token shown as its repr, such as '\\n': meant
CODE_TAGS = {"pre", "code"}


@dataclass
class _Cell:
    stdout_boxes: int = 0


@dataclass
class PageReport:
    """What :func:`check_html` found on one page."""

    raw_tables: list[str] = field(default_factory=list)
    split_outputs: list[int] = field(default_factory=list)  # cell numbers on the page
    bad_alt: list[str] = field(default_factory=list)
    loopback: list[str] = field(default_factory=list)
    blank_runs: list[str] = field(default_factory=list)  # the start of each output with a run
    escaped_newlines: list[str] = field(default_factory=list)  # table cells
    raw_myst: list[str] = field(default_factory=list)  # directives and roles left as text

    def problems(self) -> list[str]:
        out = [f"raw markdown table: {t!r}" for t in self.raw_tables]
        out += [f"code cell {n}: printed output split over several boxes" for n in self.split_outputs]
        out += [f"figure without real alt text: {a!r}" for a in self.bad_alt]
        out += [f"loopback address on the page: {a!r}" for a in self.loopback]
        out += [f"a run of blank lines in an output: {b!r}" for b in self.blank_runs]
        out += [f"an escaped newline in a table cell: {c!r}" for c in self.escaped_newlines]
        out += [f"a MyST directive or role left as text: {m!r}" for m in self.raw_myst]
        return out


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.report = PageReport()
        self.stack: list[tuple[str, set[str]]] = []
        self.cells: list[_Cell] = []
        self.cell_depth: int | None = None
        self.text: list[str] = []  # text outside code, per block
        self.pre: list[str] | None = None  # the text of the output <pre> being read
        self.cell_text: list[str] | None = None  # the text of the table cell being read

    def _classes(self, attrs: list[tuple[str, str | None]]) -> set[str]:
        return set((dict(attrs).get("class") or "").split())

    def _in_code(self) -> bool:
        return any(tag in CODE_TAGS for tag, _ in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = self._classes(attrs)
        if tag in ("br", "img", "hr", "meta", "link", "input"):
            if tag == "img" and self.cell_depth is not None:
                alt = (dict(attrs).get("alt") or "").strip()
                if not alt or HASHED.match(alt.rsplit("/", 1)[-1]):
                    self.report.bad_alt.append(alt)
            return
        self.stack.append((tag, classes))
        if tag == "pre" and any("cell_output" in c for _, c in self.stack):
            self.pre = []
        if tag in ("td", "th"):
            self.cell_text = []
        if tag == "div" and "cell" in classes and "tag_remove-output" not in classes:
            if self.cell_depth is None:
                self.cells.append(_Cell())
                self.cell_depth = len(self.stack)
        if {"output", "stream"} <= classes and "stderr" not in classes and self.cells:
            if self.cell_depth is not None:
                self.cells[-1].stdout_boxes += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self.pre is not None:
            text, self.pre = "".join(self.pre), None
            if BLANK_RUN.search(text):
                self.report.blank_runs.append(text.strip()[:60])
        if tag in ("td", "th") and self.cell_text is not None:
            text, self.cell_text = "".join(self.cell_text), None
            if "\\n" in text and not TOKEN_LABEL.match(text.strip()):
                self.report.escaped_newlines.append(text[:60])
        while self.stack:
            open_tag, _ = self.stack.pop()
            if self.cell_depth is not None and len(self.stack) < self.cell_depth:
                self.cell_depth = None
            if open_tag == tag:
                break
        if tag in ("p", "div", "td", "li"):
            self._flush()

    def handle_data(self, data: str) -> None:
        self.report.loopback += LOOPBACK.findall(data)
        if self.pre is not None:
            self.pre.append(data)
        if self.cell_text is not None:
            self.cell_text.append(data)
        if not self._in_code():
            self.text.append(data)

    def _flush(self) -> None:
        block = "".join(self.text)
        self.text = []
        match = RAW_ROW.search(block)
        if match:
            self.report.raw_tables.append(match.group(0).strip())
        self.report.raw_myst += [m.group(0) for m in RAW_MYST.finditer(block)]

    def close(self) -> None:
        super().close()
        self._flush()
        self.report.split_outputs = [i + 1 for i, c in enumerate(self.cells) if c.stdout_boxes > 1]


def check_html(html: str) -> PageReport:
    """The problems of one built page (see the module docstring)."""
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.report


def chapter_pages(site: Path) -> list[Path]:
    """The built pages of the book's chapters (every notebook and page of ``book/``)."""
    return sorted((site / "book").glob("*.html"))


def recorded_text_px(png: Path) -> float | None:
    """The smallest text size a figure's PNG records (``gpt2lib.pages.TEXT_SIZE_KEY``)."""
    from PIL import Image

    from gpt2lib.pages import TEXT_SIZE_KEY

    with Image.open(png) as image:
        value = getattr(image, "text", {}).get(TEXT_SIZE_KEY)
    return float(value) if value is not None else None


def figure_text_problems(figures: list[dict], width: int, site: Path | None = None,
                         base: str = "") -> list[str]:  # fmt: skip
    """Figures (``src``, ``alt``, ``natural`` and ``shown`` width in px) whose smallest text is
    shown too small; a figure served from ``base`` is read from the same path under ``site``."""
    from urllib.parse import unquote, urlparse

    problems = []
    for n, figure in enumerate(figures, 1):
        name = f"figure {n} ({figure['alt'][:60]!r})"
        url = urlparse(figure["src"])
        if base and site is not None and figure["src"].startswith(base):
            path = site / unquote(figure["src"][len(base):].split("?")[0])
        elif url.scheme == "file":
            path = Path(unquote(url.path))
        else:
            path = None
        if path is None or not path.is_file() or not figure["natural"]:
            problems.append(f"{name}: not a local image the check can read ({figure['src'][:80]})")
            continue
        text_px = recorded_text_px(path)
        if text_px is None:
            problems.append(f"{name}: its PNG does not record its text size "
                            "(show it with gpt2lib.pages.label_figures)")  # fmt: skip
            continue
        shown = text_px * figure["shown"] / figure["natural"]
        if shown < MIN_TEXT_PX:
            problems.append(
                f"{name}: its smallest text is {shown:.1f} px on a {width} px screen (under "
                f"{MIN_TEXT_PX:g}): {text_px:.1f} px in a {figure['natural']} px image shown "
                f"{figure['shown']:.0f} px wide"
            )
    return problems


FIGURES = ("Array.from(document.querySelectorAll('div.cell_output img')).map(img => ({"
           "src: img.src, alt: img.alt, natural: img.naturalWidth,"
           "shown: img.getBoundingClientRect().width}))")


def look_at_pages(pages: list[Path], out: Path | None, chromium: str, site: Path) -> dict[Path, list[str]]:
    """Each page, served over HTTP as a host would serve it, at every width of :data:`WIDTHS`:
    its problems (wider than the screen, figure text too small, a request to another host, a
    console error), and ``out/<page>-<width>.png`` when ``out`` is given."""
    problems: dict[Path, list[str]] = {}
    with serve(site) as base, Chromium(chromium) as browser:
        for page in pages:
            found = problems.setdefault(page, [])
            for width in WIDTHS:
                browser.resize(width)
                browser.navigate(base + page.relative_to(site).as_posix())  # loaded, laid out
                browser.evaluate("document.querySelectorAll('.toggle-hidden').forEach("
                                 "e => e.classList.remove('toggle-hidden'))")  # open every solution
                browser.settle()
                laid_out = browser.evaluate("document.documentElement.scrollWidth")
                if laid_out > width:
                    found.append(f"{laid_out} px wide on a {width} px screen: the page scrolls sideways")
                if width == WIDTHS[0]:
                    found += [f"requested from another host: {url[:120]}"
                              for url in foreign_requests(browser.requests)]  # fmt: skip
                    found += [f"console error: {error[:200]}" for error in browser.errors]
                found += figure_text_problems(browser.evaluate(FIGURES), width, site, base)
                if out is not None:
                    browser.screenshot(out / f"{page.stem}-{width}.png", width)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "screenshots")
    parser.add_argument("--no-screenshots", action="store_true")
    args = parser.parse_args(argv)
    pages = chapter_pages(args.site)
    if not pages:
        print(f"no built pages under {args.site}: build the book first", file=sys.stderr)
        return 2
    found = {page: check_html(page.read_text(encoding="utf-8")).problems() for page in pages}
    if not args.no_screenshots:
        chromium = find_chromium()
        if chromium is None:
            print("chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        for page, problems in look_at_pages(pages, args.out, chromium, args.site).items():
            found[page] += problems
    failed = 0
    for page, problems in found.items():
        print(f"{page.relative_to(args.site)}: {'ok' if not problems else 'FAILED'}")
        for problem in problems:
            print(f"  {problem}")
        failed += bool(problems)
    if not args.no_screenshots:
        print(f"{len(pages) * len(WIDTHS)} full-page screenshots in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
