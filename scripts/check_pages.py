"""Check the built website the way a reader sees it, and screenshot every page.

    python scripts/check_pages.py                 # _build/html -> build/screenshots/*.png
    python scripts/check_pages.py --no-screenshots

Reads every chapter page of ``_build/html`` (built by ``scripts/setup.sh``) and fails, naming
the page and what it found, on:

- a raw markdown table: a line ``| a | b |`` in the page's text (outside code), where a table
  should have been rendered (the benchmark tables of the appendix once were);
- a code cell whose printed output is split over several boxes (its stdout written in pieces
  and shown as one box per piece, with labels landing in the wrong box);
- an output figure without alt text, or whose alt text is only its hashed file name.

Then it screenshots each page with headless Chromium (Debian's ``chromium`` package), so that a
person can look at what the checks cannot judge. CI runs it after the book is built.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# a table row left as text: | a | b | (the separator row's dashes may have become typographic)
RAW_ROW = re.compile(r"^[ \t]*\|(?:[^|\n]*\|){2,}[ \t]*$", re.MULTILINE)
HASHED = re.compile(r"^[0-9a-f]{16,}\.(png|jpe?g|svg)$")
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

    def problems(self) -> list[str]:
        out = [f"raw markdown table: {t!r}" for t in self.raw_tables]
        out += [f"code cell {n}: printed output split over several boxes" for n in self.split_outputs]
        out += [f"figure without real alt text: {a!r}" for a in self.bad_alt]
        return out


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.report = PageReport()
        self.stack: list[tuple[str, set[str]]] = []
        self.cells: list[_Cell] = []
        self.cell_depth: int | None = None
        self.text: list[str] = []  # text outside code, per block

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
        if tag == "div" and "cell" in classes and "tag_remove-output" not in classes:
            if self.cell_depth is None:
                self.cells.append(_Cell())
                self.cell_depth = len(self.stack)
        if {"output", "stream"} <= classes and "stderr" not in classes and self.cells:
            if self.cell_depth is not None:
                self.cells[-1].stdout_boxes += 1

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            open_tag, _ = self.stack.pop()
            if self.cell_depth is not None and len(self.stack) < self.cell_depth:
                self.cell_depth = None
            if open_tag == tag:
                break
        if tag in ("p", "div", "td", "li"):
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._in_code():
            self.text.append(data)

    def _flush(self) -> None:
        block = "".join(self.text)
        self.text = []
        match = RAW_ROW.search(block)
        if match:
            self.report.raw_tables.append(match.group(0).strip())

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


def screenshot(page: Path, out: Path, chromium: str) -> None:
    """A full-width PNG of the top of ``page`` (headless Chromium, no network)."""
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--window-size=1280,2400", f"--screenshot={out}", page.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=120)


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
    failed = 0
    for page in pages:
        problems = check_html(page.read_text(encoding="utf-8")).problems()
        print(f"{page.relative_to(args.site)}: {'ok' if not problems else 'FAILED'}")
        for problem in problems:
            print(f"  {problem}")
        failed += bool(problems)
    if not args.no_screenshots:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            print("chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        for page in pages:
            screenshot(page, args.out / f"{page.stem}.png", chromium)
        print(f"{len(pages)} screenshots in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
