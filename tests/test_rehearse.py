"""scripts/rehearse.py: its environment and what it records (CI runs the rehearsal itself)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import rehearse  # noqa: E402


def test_environment_is_the_full_profile_capped_without_ollama(tmp_path: Path) -> None:
    env = rehearse.environment("http://127.0.0.1:1234", tmp_path)
    assert env["GPT2LIB_PROFILE"] == "full" and env["GPT2LIB_REHEARSAL"] == "1"
    assert env["GPT2LIB_MIRROR"] == "http://127.0.0.1:1234" and env["GPT2LIB_HOME"] == str(tmp_path)
    assert env["OLLAMA_HOST"].startswith("http://127.0.0.1:")


def test_records_the_loaded_checkpoint_not_the_bare_name() -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [
        nbformat.v4.new_output("stream", text="checkpoint: 124M\n"),
        nbformat.v4.new_output(
            "stream",
            text="checkpoint: rehearsal: random weights (seed 123) in GPT-2 124M's shape\n"
            "parameters: 124,439,808\n",
        ),
    ]
    nb.cells.append(cell)
    checkpoint, parameters = rehearse._loaded_model(nb)
    assert checkpoint.startswith("rehearsal: random weights") and parameters == 124_439_808
