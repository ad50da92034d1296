"""Build the live widgets into the site: the JavaScript bundle, ONNX Runtime's WebAssembly, and the
models, each described in ``models.json`` (what it is, its size, its sha256, its chapter's score).

    python scripts/build_widgets.py            # -> build/site-static/widgets/

``scripts/setup.sh`` runs it after ``npm ci`` (site/package-lock.json pins onnxruntime-web,
js-tiktoken and esbuild) and before the book is built; the build copies ``build/site-static`` to
the site's root, so every page finds ``../widgets/``. The models come from what is committed:
the mini GPT-2 in ``gpt2lib/pretrained`` is exported with :func:`gpt2lib.onnx_export.export_onnx`
(its float16 weights stored as they are, computed in float32), so the page runs the very
weights whose score chapter 3 measures; chapter 5's classifier is that model plus the adapters and
head its run saved in ``book/outputs/offline``. Both read one copy of the mini model's token table
(88 % of its bytes), an ONNX external-data file. Each file is checked with ONNX Runtime against
PyTorch before the site gets it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

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


TABLE = "mini-wte.bin"  # the mini model's token table, one file that both of its models read
SPAM_DELTA = ROOT / "book" / "outputs" / "offline" / "spam-lora-delta.safetensors"


def share_table(path: Path, out: Path, shape: tuple[int, int]) -> dict:
    """Move the token table of the ONNX file ``path`` into ``out/TABLE`` (ONNX external data),
    so that every model built on the mini model downloads it once; the table's bytes must be
    those already there. Returns what models.json says of the shared file."""
    import onnx

    proto = onnx.load(str(path))
    # the (vocab_size, emb_dim) initializer: named for wte, or for lm_head where the two are tied
    (table,) = [i for i in proto.graph.initializer if tuple(i.dims) == shape]
    data, shared = table.raw_data, out / TABLE
    if shared.exists() and shared.read_bytes() != data:
        raise SystemExit(f"{path.name}: its token table differs from the one in {TABLE}")
    shared.write_bytes(data)
    onnx.external_data_helper.set_external_data(table, location=TABLE, offset=0, length=len(data))
    table.ClearField("raw_data")
    table.data_location = onnx.TensorProto.EXTERNAL
    onnx.save(proto, str(path))
    return {"path": TABLE, "file": f"models/{TABLE}", "bytes": len(data), "sha256": sha256(shared)}


def check(path: Path, model: torch.nn.Module, ids: list[int], attention: bool = False) -> None:
    """ONNX Runtime on the finished file (its shared table included) computes what PyTorch does."""
    import numpy as np
    import onnxruntime as ort

    from gpt2lib.model import attention_weights

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": np.array([ids])})
    with torch.no_grad():
        expected = [model(torch.tensor([ids]))[:, -1:].numpy()]
    if attention:
        expected.append(attention_weights(model, torch.tensor([ids])).numpy())
    for g, e in zip(got, expected, strict=True):
        if not np.allclose(g, e, atol=1e-4, rtol=0):
            raise SystemExit(f"{path.name}: ONNX Runtime differs from PyTorch by {abs(g - e).max():.2g}")


def card(path: Path, table: dict, model: torch.nn.Module) -> dict:
    return {
        "file": f"models/{path.name}",
        "bytes": path.stat().st_size + table["bytes"],
        "sha256": sha256(path),
        "external": [table],
        "parameters": sum(p.numel() for p in model.parameters()),
        "context_length": model.cfg.context_length,
        "n_layers": model.cfg.n_layers,
        "n_heads": model.cfg.n_heads,
    }


def mini_model(out: Path) -> dict:
    """The committed mini GPT-2 (the last position's logits and every layer's attention weights),
    and what the page says of it."""
    from gpt2lib.mini import MINI_NAME, PRETRAINED_DIR, load_mini, read_manifest
    from gpt2lib.onnx_export import export_onnx

    model, manifest = load_mini(), read_manifest()
    path = export_onnx(model, out / "models" / f"{MINI_NAME}.onnx", attention=True,
                       positions="last", weights="float16-exact")  # fmt: skip
    table = share_table(path, out / "models", (model.cfg.vocab_size, model.cfg.emb_dim))
    check(path, model, [33676, 4720, 25, 198, 40, 481, 407], attention=True)
    final = manifest["final"]
    return {
        **card(path, table, model),
        "weights_file": f"gpt2lib/pretrained/{MINI_NAME}/model.safetensors",
        "weights_sha256": sha256(PRETRAINED_DIR / MINI_NAME / "model.safetensors"),
        "title": f"{MINI_NAME}, the project's own mini GPT-2 (not OpenAI's)",
        "score": (
            f"Chapter 3 measures its validation loss on Tiny Shakespeare: "
            f"{final['val_loss']:.3f} (perplexity {final['val_perplexity']:.1f})"
        ),
    }


def spam_classifier() -> tuple[torch.nn.Module, dict]:
    """Chapter 5's classifier as its run left it: the committed mini model plus the adapters and
    head the chapter saved (``book/outputs/offline/spam-lora-delta.safetensors``)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from gpt2lib.classifier import add_classification_head
    from gpt2lib.weights import load_pretrained

    with safe_open(str(SPAM_DELTA), framework="pt") as f:
        about = json.loads(f.metadata()["gpt2lib_spam_classifier"])
    model, _ = load_pretrained(about["base"])
    add_classification_head(model, len(about["labels"]), method="lora", rank=about["rank"],
                            alpha=about["alpha"])  # fmt: skip
    missing, unexpected = model.load_state_dict(load_file(SPAM_DELTA), strict=False)
    if unexpected or any(".lora." in k or k.startswith("lm_head.") for k in missing):
        raise SystemExit(f"{SPAM_DELTA} does not fit the classifier: {unexpected or missing}")
    return model.eval(), about


def spam_model(out: Path) -> dict:
    from gpt2lib.onnx_export import export_onnx

    model, about = spam_classifier()
    path = export_onnx(model, out / "models" / "spam-classifier.onnx", positions="last",
                       weights="float16-exact")  # fmt: skip
    table = share_table(path, out / "models", (model.cfg.vocab_size, model.cfg.emb_dim))
    check(path, model, [1639, 389, 257, 8464, 0])
    return {
        **card(path, table, model),
        "weights_file": f"{SPAM_DELTA.relative_to(ROOT)} (on the mini model)",
        "weights_sha256": sha256(SPAM_DELTA),
        "title": (f"chapter 5's spam classifier: {about['base']} with LoRA (rank {about['rank']}, "
                  f"alpha {about['alpha']}) and a 2-class head, from this book's run"),  # fmt: skip
        "score": f"Chapter 5 measures its test accuracy: {about['test_accuracy']:.3f}",
        "labels": about["labels"],
        "max_length": about["max_length"],
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
    models = {"mini-shakespeare": mini_model(out), "spam-classifier": spam_model(out)}
    (out / "models.json").write_text(json.dumps(models, indent=2) + "\n", encoding="utf-8")
    files = {m["file"]: m["bytes"] - m["external"][0]["bytes"] for m in models.values()}
    files[f"models/{TABLE}"] = models["mini-shakespeare"]["external"][0]["bytes"]
    total = sum(files.values())  # each file once: the shared table is downloaded once
    print(f"widgets in {out}: {len(models)} model(s), {total / 1e6:.1f} MB of models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
