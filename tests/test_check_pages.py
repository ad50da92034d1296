"""scripts/check_pages.py: what it flags on a built page, and the notebooks' figure alt text."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from check_pages import check_html  # noqa: E402

from tools.browser import foreign_requests  # noqa: E402

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


def test_figure_text_is_judged_at_the_scale_the_page_shows_it(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import base64

    import matplotlib.pyplot as plt
    from check_pages import figure_text_problems  # noqa: E402

    from gpt2lib.pages import figure_png

    fig, ax = plt.subplots(figsize=(6.8, 3), dpi=100)
    ax.plot([0, 1], [0, 1])
    ax.set_title("ten-point text")  # 10 pt = 13.9 px, the smallest text
    labelled = tmp_path / "labelled.png"
    labelled.write_bytes(base64.b64decode(figure_png(fig)))
    fig.savefig(tmp_path / "plain.png")  # saved without the record
    plt.close(fig)

    def shown(png: Path, natural: int, width: float) -> dict:
        return {"src": png.as_uri(), "alt": "a line", "natural": natural, "shown": width}

    assert figure_text_problems([shown(labelled, 680, 680)], 1280) == []
    (small,) = figure_text_problems([shown(labelled, 680, 340)], 390)  # shrunk to half: 6.9 px
    assert "figure 1 ('a line')" in small and "6.9 px on a 390 px screen" in small
    (unlabelled,) = figure_text_problems([shown(tmp_path / "plain.png", 680, 680)], 1280)
    assert "does not record its text size" in unlabelled


def test_myst_left_as_text_is_flagged_outside_code_only():
    raw = "<p>```{exercise} A title</p><p>see {glue:text}`n_tokens` here</p>"
    in_code = "<pre>```{exercise} A title</pre><p><code>{glue:text}`x`</code></p>"
    assert check_html(raw).raw_myst == ["```{exercise}", "{glue:text}`"]
    assert check_html(in_code).problems() == []


def test_requests_that_leave_the_pages_host_are_named_once():
    cdn = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
    urls = [
        "file:///site/book/01_attention.html",
        "file:///site/mathjax/tex-mml-chtml.js",
        "data:image/png;base64,iVBORw0KGgo=",
        "blob:null/0b6c",
        "http://127.0.0.1:8000/_static/app.js",  # a local server is the page's own host
        cdn,
        cdn,
        "//fonts.example.org/font.woff2",
    ]
    assert foreign_requests(urls) == ["//fonts.example.org/font.woff2", cdn]
