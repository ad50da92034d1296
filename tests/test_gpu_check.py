"""benchmarks.gpu_check: its plain-Python runner (for images without Jupyter) and its report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.gpu_check import run_cells_as_python, table

REPO = Path(__file__).resolve().parents[1]


def _notebook(path: Path, *cells: str) -> Path:
    doc = {
        "cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": []} for c in cells],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


def test_cells_run_in_order_in_one_namespace_magics_skipped(tmp_path: Path) -> None:
    nb = _notebook(
        tmp_path / "a.ipynb",
        "%matplotlib inline\nx = 2",
        "from pathlib import Path\nPath('out.txt').write_text(str(x * 21))",  # runs in its folder
        "from IPython.display import Markdown, display\ndisplay(Markdown('ok'))",
    )
    run_cells_as_python(nb)
    assert (tmp_path / "out.txt").read_text() == "42"


def test_a_failing_cell_is_named(tmp_path: Path) -> None:
    nb = _notebook(tmp_path / "b.ipynb", "y = 1", "raise ValueError('broken')")
    with pytest.raises(RuntimeError, match=r"b\.ipynb, cell 1: ValueError: broken"):
        run_cells_as_python(nb)


def test_chapter_1_runs_as_plain_python(tmp_path: Path) -> None:
    """A real chapter through the fallback (the offline world comes from tools.offline, via conftest.py)."""
    (tmp_path / "book").mkdir()
    chapter = Path(shutil.copy(REPO / "book" / "01_attention.ipynb", tmp_path / "book"))
    run_cells_as_python(chapter)


def test_report_names_every_step() -> None:
    chapters = [{"chapter": "01.ipynb", "seconds": 3.0, "error": None},
                {"chapter": "02.ipynb", "seconds": 1.0, "error": "RuntimeError: x"}]  # fmt: skip
    report = table("NVIDIA H100", chapters, {"seconds": 11.0, "steps": 700, "val_loss": 5.151,
                                             "error": None}, {})  # fmt: skip
    assert (
        "# GPU check on NVIDIA H100" in report
        and "| chapter 01.ipynb (offline profile) | 3.0 | ran through |" in report
    )
    assert "FAILED: RuntimeError: x" in report and "700 steps, validation loss 5.151" in report


def test_cuda_devices_are_left_visible_unless_cpu_is_asked_for(monkeypatch) -> None:
    """The check once set CUDA_VISIBLE_DEVICES="" when it was unset, hiding every GPU."""
    import benchmarks.gpu_check as check

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(check, "_device_name", lambda device: (device, "x"))
    monkeypatch.setattr(check, "table", lambda *a: "")
    monkeypatch.setattr("tools.offline.offline_environment", lambda: {})
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    seen = {}

    def fake_pretrain(device, steps, home):
        seen["visible"] = __import__("os").environ.get("CUDA_VISIBLE_DEVICES")
        return {"error": None}

    monkeypatch.setattr(check, "_pretrain", fake_pretrain)
    check.main(["--device", "cuda", "--skip", "chapters,benchmark", "--out", "/tmp/gpu-check-test"])
    assert seen["visible"] is None
