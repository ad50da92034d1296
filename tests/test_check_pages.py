"""scripts/check_pages.py: what it flags on a built page, and the notebooks' figure alt text."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from check_pages import check_html  # noqa: E402

CELL = '<div class="cell docutils container"><div class="cell_input"><pre>print(1)</pre></div>'
CELL += '<div class="cell_output docutils container">{}</div></div>'
STREAM = '<div class="output stream highlight-myst-ansi notranslate"><pre>{}</pre></div>'


def test_a_cell_with_one_output_box_is_fine_and_two_are_flagged():
    one = CELL.format(STREAM.format("a\nb"))
    two = CELL.format(STREAM.format("a") + STREAM.format("b"))
    stderr = '<div class="output stderr"><pre>warning</pre></div>'
    with_stderr = CELL.format(STREAM.format("a") + stderr)
    assert check_html(one + with_stderr).problems() == []
    report = check_html(one + two)
    assert report.split_outputs == [2]
    assert "code cell 2" in report.problems()[0]


def test_raw_markdown_tables_are_flagged_outside_code_only():
    raw = "<p>| # | measure | ratio |\n|—|—|—:|\n| 1 | forward | 1.1x |</p>"
    rendered = "<table><tr><td>1</td><td>forward</td></tr></table>"
    in_code = "<pre>| a | b | c |</pre>"
    assert check_html(raw).raw_tables == ["| # | measure | ratio |"]
    assert check_html(rendered + in_code).raw_tables == []


def test_output_figures_need_real_alt_text():
    hashed = '<img alt="../_images/80ae9e9ef7bda2a3bdf4f0d8.png" src="x.png">'
    described = '<img alt="Loss against steps, training and validation" src="y.png">'
    logo = '<img alt="" src="logo.png">'  # outside a cell: not a figure of the book
    report = check_html(logo + CELL.format(hashed) + CELL.format(described))
    assert report.bad_alt == ["../_images/80ae9e9ef7bda2a3bdf4f0d8.png"]


def test_every_figure_a_chapter_draws_has_alt_text():
    missing = []
    for nb_path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb["cells"]):
            draws = any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
            alt = cell.get("metadata", {}).get("mystnb", {}).get("image", {}).get("alt", "")
            if draws and len(alt.split()) < 4:
                missing.append(f"{nb_path.name} cell {i}")
    assert not missing, f"figures without alt text (metadata mystnb.image.alt): {missing}"


def test_loopback_addresses_blank_runs_and_escaped_newlines_are_flagged():
    port = CELL.format(STREAM.format("served by:  http://127.0.0.1:41275/x (mirror)"))
    blank = CELL.format(STREAM.format("ROMEO:\nI'll be not.\n\n\n\n\n---"))
    two_blank = CELL.format(STREAM.format("a\n\n\nb"))  # two blank lines: a paragraph break
    table = "<table><tr><td>Rewrite it.\\n\\n### Input:\\nThe car</td><td>ok</td></tr></table>"
    report = check_html(port + blank + two_blank + table)
    assert report.loopback == ["127.0.0.1:41275"]
    assert report.blank_runs == ["ROMEO:\nI'll be not.\n\n\n\n\n---"]
    assert report.escaped_newlines == ["Rewrite it.\\n\\n### Input:\\nThe car"]
    assert len(report.problems()) == 3
    fine = CELL.format(STREAM.format("Ollama listens on http://localhost:11434 by default"))
    code = '<div class="cell_input"><pre>\n\n\n\ndef f():\n    pass</pre></div>'  # input, not output
    token = "<table><tr><td>'\\n'</td><td>0.251</td></tr></table>"  # the newline token, on purpose
    assert check_html(fine + code + token).problems() == []
