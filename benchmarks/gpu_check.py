"""The GPU check: one command that runs the book on a CUDA device, for whoever has one.

    python -m benchmarks.gpu_check                 # about 5 minutes on one GPU, no network

It needs the offline assets (``../shared/assets`` or ``GPT2LIB_ASSETS``) and works without
internet, TensorFlow, Jupyter or nbval, on an image with torch, transformers, peft, tiktoken,
safetensors, pandas and matplotlib (the mirror's checkpoints are written with TensorFlow where
it is installed; elsewhere a mirror already built in ``build/mirror`` is served as it is).
It:

1. executes every chapter in the offline profile on the device, top to bottom: with nbclient
   where it is installed, else by running the notebooks' code cells in order as plain Python.
   Outputs are not compared (numbers differ across devices); every cell must run;
2. pretrains the mini GPT-2 for the default 700 steps (``python -m tools.pretrain``) and
   prints its validation loss;
3. runs ``python -m benchmarks.run`` on the device;
4. prints one table and writes it to ``benchmarks/results/<gpu>.md``.

``--device cpu`` and ``--quick`` (a few pretraining steps, the benchmark's small sizes) make a
dry run possible on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


# --- running notebooks ---------------------------------------------------------------------


def _ipython_stand_in() -> None:
    """Give ``from IPython.display import Markdown, display`` something to import without
    IPython, so a chapter's code runs as plain Python (what it would display is printed)."""
    try:
        import IPython.display  # noqa: F401
    except ImportError:
        display_module = types.ModuleType("IPython.display")
        display_module.Markdown = lambda text: text  # type: ignore[attr-defined]
        display_module.display = lambda *objects: print(*objects)  # type: ignore[attr-defined]
        sys.modules.setdefault("IPython", types.ModuleType("IPython"))
        sys.modules["IPython.display"] = display_module


def run_cells_as_python(path: Path) -> None:
    """Execute the code cells of the notebook at ``path`` in order, as plain Python, in its
    folder. IPython magics (``%...``, ``!...``) are skipped. Raises ``RuntimeError`` naming
    the failing cell."""
    import matplotlib

    matplotlib.use("Agg")  # no display: plt.show() does nothing
    _ipython_stand_in()
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    namespace: dict[str, object] = {"__name__": "__main__"}
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        for index, cell in enumerate(cells):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            code = "\n".join(
                line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
            )
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(code, f"{path.name}, cell {index}", "exec"), namespace)  # noqa: S102
            except Exception as err:
                raise RuntimeError(
                    f"{path.name}, cell {index}: {type(err).__name__}: {err}"
                ) from err
    finally:
        os.chdir(cwd)


def run_notebook(path: Path, timeout: int = 1800) -> None:
    """Execute a notebook: with nbclient if installed, else :func:`run_cells_as_python`."""
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError:
        run_cells_as_python(path)
        return
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()


def run_chapters(work: Path) -> list[dict[str, object]]:
    """Every chapter of a copy of the book, in the offline profile: seconds, ok, error."""
    results = []
    for path in sorted((work / "book").glob("*.ipynb")):
        start, error = time.perf_counter(), None
        try:
            run_notebook(path)
        except Exception as err:
            lines = [line for line in str(err).splitlines() if line.strip()]
            error = (lines[-1] if lines else repr(err))[:300]
        results.append(
            {"chapter": path.name, "seconds": round(time.perf_counter() - start, 1), "error": error}
        )
        print(f"  {path.name}: {results[-1]['seconds']} s, {error or 'ok'}", flush=True)
    return results


# --- the check -----------------------------------------------------------------------------


def _device_name(device: str) -> tuple[str, str]:
    """``(description, file-name slug)`` of the device."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = f"{device} ({os.cpu_count()} logical CPUs)"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return name, slug


def _pretrain(device: str, steps: int, home: Path) -> dict[str, object]:
    out = home / "mini-check"
    command = [sys.executable, "-m", "tools.pretrain", "--out", str(out), "--device", device,
               "--max-steps", str(steps), "--eval-every", str(min(40, steps)), "--no-progress",
               "--checkpoint", str(home / "mini-check.pt")]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = round(time.perf_counter() - start, 1)
    if done.returncode != 0:
        return {"seconds": seconds, "error": done.stderr.strip().splitlines()[-1][:300]}
    from gpt2lib.mini import read_manifest

    final = read_manifest(out)["final"]
    return {"seconds": seconds, "steps": steps, "val_loss": final["val_loss"], "error": None}


def _benchmark(device: str, quick: bool, name: str, out: Path) -> dict[str, object]:
    command = [sys.executable, "-m", "benchmarks.run", "--device", device, "--name", name,
               "--out", str(out)]  # fmt: skip
    if quick:
        command.append("--quick")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = round(time.perf_counter() - start, 1)
    error = None if done.returncode == 0 else done.stderr.strip().splitlines()[-1][:300]
    return {"seconds": seconds, "results": f"{name}.md (below)", "error": error}


def table(device: str, chapters: list, pretrain: dict, bench: dict) -> str:
    rows = ["| step | seconds | result |", "|---|---:|---|"]
    for c in chapters:
        rows.append(f"| chapter {c['chapter']} (offline profile) | {c['seconds']} | "
                    f"{'ran through' if not c['error'] else 'FAILED: ' + str(c['error'])} |")  # fmt: skip
    if pretrain:
        result = (f"{pretrain['steps']} steps, validation loss {pretrain['val_loss']:.3f}"
                  if not pretrain["error"] else f"FAILED: {pretrain['error']}")  # fmt: skip
        rows.append(f"| `python -m tools.pretrain` | {pretrain['seconds']} | {result} |")
    if bench:
        result = f"see {bench['results']}" if not bench["error"] else f"FAILED: {bench['error']}"
        rows.append(f"| `python -m benchmarks.run` | {bench['seconds']} | {result} |")
    return f"# GPU check on {device}\n\n" + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument(
        "--quick", action="store_true", help="20 pretraining steps, small benchmark"
    )
    parser.add_argument("--skip", default="", help="comma list of: chapters,pretrain,benchmark")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where <gpu>.md goes")
    args = parser.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu for a dry run", file=sys.stderr)
        return 2
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    sys.path.insert(0, str(ROOT))
    from tools.offline import offline_environment

    env = offline_environment()  # the offline profile, the local mirror, a fresh cache
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # chapters pick their device with get_device()
    device_name, slug = _device_name(args.device)
    print(f"GPU check on {device_name}; {', '.join(f'{k}={v}' for k, v in env.items())}")
    chapters, pretrain, bench = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="gpt2lib-gpu-check-") as tmp:
        work = Path(tmp)
        if "chapters" not in skip:
            shutil.copytree(ROOT / "book", work / "book")
            shutil.copytree(RESULTS, work / "benchmarks" / "results")
            print("1. every chapter, offline profile:", flush=True)
            chapters = run_chapters(work)
        if "pretrain" not in skip:
            steps = 20 if args.quick else 700
            print(f"2. python -m tools.pretrain, {steps} steps ...", flush=True)
            pretrain = _pretrain(args.device, steps, work)
        if "benchmark" not in skip:
            print("3. python -m benchmarks.run ...", flush=True)
            bench = _benchmark(args.device, args.quick, slug, args.out)
    report = table(device_name, chapters, pretrain, bench)
    print(report)
    results = args.out / f"{slug}.md"  # the benchmark's table, if it ran, goes below ours
    below = results.read_text() if bench and not bench["error"] and results.is_file() else ""
    args.out.mkdir(parents=True, exist_ok=True)
    results.write_text(report + ("\n" + below if below else ""))
    failed = [c for c in chapters if c["error"]] + [r for r in (pretrain, bench) if r.get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
