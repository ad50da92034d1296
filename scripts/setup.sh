#!/usr/bin/env bash
# Set up everything on a fresh machine, then build the book.
#   bash scripts/setup.sh
# Creates .venv (Python >= 3.10), installs torch, the book's requirements and gpt2lib itself
# (editable), and builds the website into _build/html from the committed notebook outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, on its own: on machines with a local CPU build this takes it instead of CUDA wheels
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -r requirements.txt -e .
# -W: a broken reference or a missing file fails the build
.venv/bin/jupyter-book build . -W -n --keep-going
echo "The book is in _build/html/index.html"
