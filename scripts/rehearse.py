"""Rehearse the book's full profile: chapters 4-7 and the appendix at the real model sizes.

Readers run the full profile (OpenAI's 124M and 355M, the book's settings) on a Colab GPU; CI
runs only the offline one. This script executes those chapters top to bottom with
``GPT2LIB_PROFILE=full`` in a temporary copy of ``book/`` (nothing under ``book/`` changes), so
that a full-profile path can no longer break unseen::

    python scripts/rehearse.py --out build/rehearsal

- Weights: a rehearsal mirror (:func:`tools.mirror.build_rehearsal_mirror`) serves
  seeded random stand-ins at OpenAI's 124M and 355M paths and at the Hugging Face hub's. It is
  the only place a stand-in sits under OpenAI's names; every model it serves describes itself
  as "rehearsal: random weights", and so does every line this script prints.
- Work: with ``GPT2LIB_REHEARSAL=1`` each chapter's settings cell takes
  :data:`gpt2lib.train.REHEARSAL_CAPS` (two optimizer steps per training run, two batches
  per evaluation, four new tokens per generation) and applies them to the loop counts it
  passes to the library. The code path, the model sizes and every other
  setting are the full profile's; no library function reads the variable.
- No Ollama: ``OLLAMA_HOST`` points at a closed port on 127.0.0.1, so chapter 7 takes its
  offline judges.
- A fresh runtime: chapter 6's responses file is removed before chapter 7 runs, so chapter 7
  makes it itself, as in a new Colab session (:data:`STANDALONE`).

It writes ``OUT/rehearsal.json``, one object per notebook (``notebook``, ``profile``,
``checkpoint``, ``parameters`` of the pretrained model as loaded, ``seconds``, ``ok``,
``error``), and exits 1 if any cell raised.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOTEBOOKS = (
    "04_pretrained_weights.ipynb",
    "05_lora_spam.ipynb",
    "06_instruction_tuning.ipynb",
    "07_llm_judge.ipynb",
    "appendix_making_it_fast.ipynb",
)
LABEL = "rehearsal (random weights, not GPT-2)"
# files a notebook must make for itself, as in a fresh Colab runtime: removed before it runs
STANDALONE = {
    "07_llm_judge.ipynb": (
        "outputs/full/instruction-data-with-response.json",
        "outputs/full/procedural-with-response.json",
    )
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(mirror_url: str, home: Path) -> dict[str, str]:
    """The variables every rehearsed notebook runs with."""
    return {
        "GPT2LIB_PROFILE": "full",
        "GPT2LIB_REHEARSAL": "1",
        "GPT2LIB_MIRROR": mirror_url,
        "GPT2LIB_HOME": str(home),
        "TIKTOKEN_CACHE_DIR": str(home / "tiktoken"),
        "OLLAMA_HOST": f"http://127.0.0.1:{_closed_port()}",
        "TQDM_DISABLE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def _loaded_model(nb: object) -> tuple[str | None, int | None]:
    """The first ``checkpoint:`` / ``parameters:`` lines a cell printed (PretrainedInfo)."""
    text = "\n".join(
        "".join(out.get("text", ""))
        for cell in nb.cells  # type: ignore[attr-defined]
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    described = [c for c in re.findall(r"^checkpoint: *(.+)$", text, re.M) if " " in c]
    parameters = re.search(r"^parameters: ([\d,]+)$", text, re.M)
    return (
        described[0] if described else None,  # PretrainedInfo's line, not a bare name
        int(parameters.group(1).replace(",", "")) if parameters else None,
    )


def rehearse_notebook(path: Path, timeout: int) -> dict[str, object]:
    """Execute one notebook in place (a copy); return its line of ``rehearsal.json``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    start, error = time.perf_counter(), None
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        error = lines[-1][:500] if lines else repr(err)
    except Exception as err:  # a kernel that died, a timeout
        error = f"{type(err).__name__}: {err}"[:500]
    checkpoint, parameters = _loaded_model(nb)
    return {
        "notebook": path.name,
        "profile": "full",
        "checkpoint": checkpoint,
        "parameters": parameters,
        "seconds": round(time.perf_counter() - start, 1),
        "ok": error is None,
        "error": error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where rehearsal.json goes")
    parser.add_argument("--notebooks", nargs="*", default=list(NOTEBOOKS))
    parser.add_argument("--mirror", type=Path, default=ROOT / "build" / "rehearsal-mirror")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)

    from tools.mirror import build_rehearsal_mirror, serve
    from tools.offline import shared_assets

    print(f"{LABEL}: building the mirror (stand-ins at OpenAI's 124M and 355M paths)", flush=True)
    build_rehearsal_mirror(args.mirror, shared_assets() / "mirror")
    server, url = serve(args.mirror)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="gpt2lib-rehearsal-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "book", work / "book", ignore=shutil.ignore_patterns("_build"))
        shutil.copytree(ROOT / "benchmarks" / "results", work / "benchmarks" / "results")
        os.environ.update(environment(url, work / "home"))
        for name in args.notebooks:
            for made_by_an_earlier_chapter in STANDALONE.get(name, ()):
                (work / "book" / made_by_an_earlier_chapter).unlink(missing_ok=True)
            result = rehearse_notebook(work / "book" / name, args.timeout)
            results.append(result)
            status = "ok" if result["ok"] else f"FAILED: {result['error']}"
            print(
                f"{LABEL}: {name}: {result['checkpoint']}, {result['parameters'] or 0:,} "
                f"parameters, {result['seconds']} s, {status}",
                flush=True,
            )
    server.shutdown()
    server.server_close()
    (args.out / "rehearsal.json").write_text(json.dumps(results, indent=2) + "\n")
    failed = [r["notebook"] for r in results if not r["ok"]]
    print(f"{LABEL}: {len(results) - len(failed)} of {len(results)} notebooks ran through")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
