#!/usr/bin/env bash
# Set up everything on a fresh machine, then build the book.
#   bash scripts/setup.sh
# Creates .venv (Python >= 3.10), installs torch, the book's requirements and gpt2lib itself
# (editable), installs the website's JavaScript from npm (site/), builds the live widgets, and
# builds the website into _build/html from the committed notebook outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, on its own: on machines with a local CPU build this takes it instead of CUDA wheels
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -r requirements.txt -e .
# the website's JavaScript (MathJax, ONNX Runtime Web, js-tiktoken, and esbuild to bundle them) at
# the exact versions of site/package-lock.json, served from the site itself: no page loads
# anything from another host
command -v npm >/dev/null || {
    echo "npm not found: install Node.js (20 or later) with npm; the website's JavaScript comes from npm" >&2
    exit 1
}
npm ci --prefix site --no-audit --no-fund --loglevel=error
rm -rf build/site-static && mkdir -p build/site-static/mathjax
mathjax=site/node_modules/mathjax
cp "$mathjax/LICENSE" "$mathjax/es5/tex-mml-chtml.js" build/site-static/mathjax/
# what tex-mml-chtml.js loads on demand: fonts, TeX extensions, the menu and accessibility parts
cp -r "$mathjax/es5/input" "$mathjax/es5/output" "$mathjax/es5/ui" "$mathjax/es5/a11y" \
    "$mathjax/es5/sre" "$mathjax/es5/adaptors" build/site-static/mathjax/
# the live widgets: their JavaScript bundle, ONNX Runtime's WebAssembly and the committed models
# exported to ONNX, into build/site-static/widgets (scripts/build_widgets.py); the first run also
# trains chapter 6's model with the chapter's recipe (about 7 minutes on 2 cores; then cached)
.venv/bin/python scripts/build_widgets.py
# -W: a broken reference or a missing file fails the build
.venv/bin/jupyter-book build . -W -n --keep-going
# Sphinx copies the extra path only when some page is rebuilt: copy it again, so that a rebuilt
# widget or model always reaches the site
cp -r build/site-static/. _build/html/
echo "The book is in _build/html/index.html"
