"""Build the live widgets into the site: the JavaScript bundle, ONNX Runtime's WebAssembly, and the
models, each described in ``models.json`` (what it is, its size, its sha256, its chapter's score).

    python scripts/build_widgets.py            # -> build/site-static/widgets/

``scripts/setup.sh`` runs it after ``npm ci`` (site/package-lock.json pins onnxruntime-web,
js-tiktoken and esbuild) and before the book is built; the build copies ``build/site-static`` to
the site's root, so every page finds ``../widgets/``. The models come from what is committed:
the mini GPT-2 in ``gpt2lib/pretrained`` is exported with :func:`gpt2lib.onnx_export.export_onnx`
(its float16 weights stored as they are, computed in float32), so the page runs the very
weights whose score chapter 3 measures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "site"
OUT = ROOT / "build" / "site-static" / "widgets"
# ONNX Runtime's plain WebAssembly build (no WebGPU, no JSPI): the binary and its JavaScript glue,
# which the runtime loads from the page's own host
WASM = ("ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundle(out: Path) -> None:
    """esbuild: widgets.js with js-tiktoken inlined, ONNX Runtime as a chunk loaded on demand."""
    esbuild = SITE / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        raise SystemExit(f"{esbuild} is missing: run `npm ci --prefix site` first")
    subprocess.run(
        [str(esbuild), str(SITE / "widgets" / "widgets.js"), "--bundle", "--format=esm",
         "--splitting", "--minify", "--target=es2020", "--legal-comments=external",
         "--log-level=warning", "--conditions=onnxruntime-web-use-extern-wasm", f"--outdir={out}"],
        check=True,
    )  # fmt: skip
    for name in WASM:
        shutil.copy(SITE / "node_modules" / "onnxruntime-web" / "dist" / name, out / name)
    notice = []  # the packages whose code the page runs (they ship no LICENSE file to copy)
    for package in ("onnxruntime-web", "js-tiktoken", "base64-js"):
        meta = json.loads((SITE / "node_modules" / package / "package.json").read_text())
        notice.append(f"{package} {meta['version']}: {meta['license']} license, {meta.get('homepage', '')}")
    (out / "THIRD-PARTY.txt").write_text("\n".join(notice) + "\n", encoding="utf-8")


def mini_model(out: Path) -> dict:
    """The committed mini GPT-2 (the last position's logits and every layer's attention weights),
    and what the page says of it."""
    from gpt2lib.mini import MINI_NAME, PRETRAINED_DIR, load_mini, read_manifest
    from gpt2lib.onnx_export import export_onnx

    model, manifest = load_mini(), read_manifest()
    path = export_onnx(model, out / "models" / f"{MINI_NAME}.onnx", attention=True,
                       positions="last", weights="float16")  # fmt: skip
    final = manifest["final"]
    return {
        "file": f"models/{path.name}",
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
        "weights_sha256": sha256(PRETRAINED_DIR / MINI_NAME / "model.safetensors"),
        "title": f"{MINI_NAME}, the project's own mini GPT-2 (not OpenAI's)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "score": (
            f"Chapter 3 measures its validation loss on Tiny Shakespeare: "
            f"{final['val_loss']:.3f} (perplexity {final['val_perplexity']:.1f})"
        ),
        "context_length": model.cfg.context_length,
        "n_layers": model.cfg.n_layers,
        "n_heads": model.cfg.n_heads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "models").mkdir(parents=True)
    bundle(out)
    models = {"mini-shakespeare": mini_model(out)}
    (out / "models.json").write_text(json.dumps(models, indent=2) + "\n", encoding="utf-8")
    total = sum(m["bytes"] for m in models.values())
    print(f"widgets in {out}: {len(models)} model(s), {total / 1e6:.1f} MB of models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
