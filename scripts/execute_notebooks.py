"""Execute chapters top to bottom in the offline world that ``pytest --nbval`` checks them in.

    python scripts/execute_notebooks.py                 # every notebook in book/
    python scripts/execute_notebooks.py book/01_attention.ipynb

Sets up the same environment as the test suite (:func:`tools.offline.offline_environment`: offline
profile, local mirror on 127.0.0.1, a fresh cache, no progress bars), runs each notebook in a
kernel of this Python, and writes it back with its outputs and without timing metadata.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tools/
from tools.offline import offline_environment

ROOT = Path(__file__).resolve().parent.parent


def merge_streams(cell: nbformat.NotebookNode) -> None:
    """One output per stream: consecutive writes to stdout (or stderr) become one output, as
    the website shows them (``nb_merge_streams``), so a re-run changes no output's layout."""
    merged: list = []
    for out in cell.get("outputs", []):
        last = merged[-1] if merged else None
        if (out.output_type == "stream" and last is not None and last.output_type == "stream"
                and last.name == out.name):  # fmt: skip
            last.text += out.text
        else:
            merged.append(out)
    cell.outputs = merged


def execute(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            merge_streams(cell)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    env = offline_environment()
    print("environment:", ", ".join(f"{k}={v}" for k, v in env.items()))
    for path in notebooks:
        print(f"{path}: {execute(path, args.timeout):.0f} s", flush=True)


if __name__ == "__main__":
    main()
