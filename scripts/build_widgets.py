"""Build the live widgets into the site: the JavaScript bundle, ONNX Runtime's WebAssembly, and the
models, each described in ``models.json`` (what it is, its size, its sha256, its chapter's score).

    python scripts/build_widgets.py            # -> build/site-static/widgets/

``scripts/setup.sh`` runs it after ``npm ci`` (site/package-lock.json pins onnxruntime-web,
js-tiktoken and esbuild) and before the book is built; the build copies ``build/site-static`` to
the site's root, so every page finds ``../widgets/``. The models come from what is committed:
the mini GPT-2 in ``gpt2lib/pretrained`` is exported with :func:`gpt2lib.onnx_export.export_onnx`
(its float16 weights stored as they are, computed in float32), so the page runs the very
weights whose score chapter 3 measures; chapter 5's classifier is that model plus the adapters and
head its run saved in ``book/outputs/offline``. Chapter 6's tuned model is the exception: the
chapter keeps no weights, so this build trains it with the chapter's recipe (once, cached) and
scores it itself (:func:`instruct`). Every model reads one copy of the mini model's weights, an
ONNX external-data file. Each file is checked with ONNX Runtime against PyTorch before the site
gets it.
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


SHARED = "mini-weights.bin"  # the mini model's weights in float16: one file for all its models
SPAM_DELTA = ROOT / "book" / "outputs" / "offline" / "spam-lora-delta.safetensors"
ALIGN = 4096  # each tensor's offset in the shared file: a page boundary, as memory maps want
_shared: dict[str, tuple[int, int]] = {}  # sha256 of a tensor's bytes -> (offset, length) there


def share_weights(path: Path, out: Path, create: bool = False) -> dict:
    """Point every float16 weight of the ONNX file ``path`` that the mini model holds (the same
    bytes) to ``out/SHARED``, ONNX external data, so that a page downloads the mini model's
    weights once for all the models built on it; ``create`` writes that file from ``path``'s
    own, the mini model's. Returns what models.json says of the shared file."""
    import onnx
    from onnx.external_data_helper import set_external_data

    proto, shared = onnx.load(str(path)), out / SHARED
    found = 0
    with open(shared, "ab" if create else "rb") as f:
        for init in proto.graph.initializer:
            if init.data_type != onnx.TensorProto.FLOAT16:
                continue
            data = init.raw_data
            digest = hashlib.sha256(data).hexdigest()
            if create and digest not in _shared:
                offset = -(-f.tell() // ALIGN) * ALIGN
                f.write(b"\0" * (offset - f.tell()) + data)
                _shared[digest] = (offset, len(data))
            if digest in _shared:
                offset, length = _shared[digest]
                set_external_data(init, location=SHARED, offset=offset, length=length)
                init.ClearField("raw_data")
                init.data_location = onnx.TensorProto.EXTERNAL
                found += length
    if not found:
        raise SystemExit(f"{path.name} shares no weight with the mini model")
    onnx.save(proto, str(path))
    return {"path": SHARED, "file": f"models/{SHARED}", "bytes": shared.stat().st_size,
            "sha256": sha256(shared), "shared_bytes": found}  # fmt: skip


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
    table = share_weights(path, out / "models", create=True)
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
    table = share_weights(path, out / "models")
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


CACHE = ROOT / "build" / "widgets-cache"  # chapter 6's model, trained once per recipe and base
TASK_RESPONSES = ROOT / "book" / "outputs" / "offline" / "procedural-with-response.json"


def instruct_model() -> tuple[torch.nn.Module, dict]:
    """Chapter 6's instruction-tuned mini model for the procedural tasks, trained by this build
    with the chapter's own recipe (``Recipe.mini_tasks()``) and seed, as section 6 trains it.

    The chapter retrains it at every run and commits no weights (a full fine-tune changes every
    number: 14 MB per run), so the site trains its own and shows the score of this very model.
    Cached in ``build/widgets-cache``, keyed by the recipe, the base weights and torch."""
    import dataclasses
    import time

    from gpt2lib.data.tasks import exact_match_by_kind, make_splits
    from gpt2lib.instruction_tuning import Recipe, generate_responses, instruction_tune
    from gpt2lib.mini import MINI_NAME, PRETRAINED_DIR
    from gpt2lib.saving import load_model, load_model_config, save_model
    from gpt2lib.weights import load_pretrained

    recipe = Recipe.mini_tasks()
    base = sha256(PRETRAINED_DIR / MINI_NAME / "model.safetensors")
    key = {"recipe": dataclasses.asdict(recipe), "base": base, "torch": torch.__version__}
    directory = CACHE / f"mini-instruct-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}"
    if (directory / "config.json").exists():
        return load_model(directory), load_model_config(directory)["extra"]
    print(f"training chapter 6's model for the procedural tasks ({recipe.max_steps} steps; once, "
          f"then cached in {directory.relative_to(ROOT)})", flush=True)  # fmt: skip
    train, val, test = make_splits()
    model, _ = load_pretrained(recipe.model)
    torch.manual_seed(recipe.seed)  # as the chapter seeds its run
    start = time.perf_counter()
    history = instruction_tune(model, train, val, recipe, progress=False)
    seconds = time.perf_counter() - start
    answers = generate_responses(model, test, max_new_tokens=recipe.max_new_tokens, batch_size=32)
    extra = {
        **key, "seed": recipe.seed, "train_seconds": round(seconds, 1),
        "val_loss": [round(v, 4) for v in history.val_loss], "steps": history.steps[-1],
        "pytorch_exact_match": exact_match_by_kind(test, answers),
    }  # fmt: skip
    save_model(model, directory, extra=extra)
    return load_model(directory), extra


def greedy_onnx(session, ids: list[int], new_tokens: int, stop: int | None) -> list[int]:
    """Greedy decoding with ONNX Runtime (a file exported with positions="last"): the new ids."""
    import numpy as np

    out: list[int] = []
    for _ in range(new_tokens):
        (logits,) = session.run(["logits"], {"input_ids": np.array([ids + out])})
        out.append(int(logits[0, -1].argmax()))
        if out[-1] == stop:
            break
    return out


def instruct(out: Path, base_session) -> dict:
    """Chapter 6's tuned model, stored as the mini model (whose weights the page has) plus an int8
    difference (in float16 it would be 14.5 MB more, past the 25 MB budget), checked token for
    token against PyTorch, and scored as the page runs it."""
    import onnxruntime as ort

    from gpt2lib.data.tasks import KINDS, exact_match, exact_match_by_kind, make_splits
    from gpt2lib.generate import generate
    from gpt2lib.instruction_tuning import extract_response, response_prompt
    from gpt2lib.mini import load_mini
    from gpt2lib.onnx_export import export_onnx
    from gpt2lib.tokenizer import ENDOFTEXT_ID, get_tokenizer

    model, about = instruct_model()
    model.eval()
    path = export_onnx(model, out / "models" / "mini-instruct.onnx", positions="last", weights="int8",
                       base=load_mini())  # fmt: skip
    table = share_weights(path, out / "models")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokenizer, (_, _, test) = get_tokenizer(), make_splits()
    new_tokens = about["recipe"]["max_new_tokens"]
    # the smaller encoding's check: greedy tokens equal PyTorch's (float32 weights) on 27 prompts
    # x 32 new tokens (past end-of-text), three of each kind: the tasks the page offers
    picked = [r for kind in KINDS for r in [t for t in test if t["kind"] == kind][:3]]
    for record in picked:
        ids = tokenizer.encode(response_prompt(record), allowed_special="all")
        expected = generate(model, torch.tensor([ids]), 32)[0, len(ids):].tolist()
        if greedy_onnx(session, ids, 32, stop=None) != expected:
            raise SystemExit(f"mini-instruct.onnx: int8 greedy tokens differ from PyTorch's on {record}")
    # every test task as the page answers it: greedy until end-of-text, at most the recipe's
    # tokens; the base model too (the page shows its answer beside the tuned one)
    answers, base_answers, agree = [], [], 0
    for record in test:
        prompt = response_prompt(record)
        ids = tokenizer.encode(prompt, allowed_special="all")
        new = greedy_onnx(session, ids, new_tokens, stop=ENDOFTEXT_ID)
        answers.append(extract_response(tokenizer.decode(ids + new), prompt))
        expected = generate(model, torch.tensor([ids]), new_tokens, eos_id=ENDOFTEXT_ID)[0, len(ids):]
        agree += int(expected.tolist() == new)
        base_new = greedy_onnx(base_session, ids, new_tokens, stop=ENDOFTEXT_ID)
        base_answers.append(extract_response(tokenizer.decode(ids + base_new), prompt))
    if agree < 0.99 * len(test):
        raise SystemExit(f"mini-instruct.onnx: int8 answers PyTorch's on only {agree} of {len(test)} tasks")
    score, before = exact_match_by_kind(test, answers), exact_match_by_kind(test, base_answers)
    book = json.loads(TASK_RESPONSES.read_text(encoding="utf-8"))
    book_score = sum(exact_match(r["model_response"], r) for r in book) / len(book)
    examples = [  # what the page offers to pick, with the answers this build computed
        {**{k: r[k] for k in ("kind", "instruction", "input", "output")},
         "answer": answers[test.index(r)], "base_answer": base_answers[test.index(r)]}
        for r in picked
    ]  # fmt: skip
    template = response_prompt({"instruction": "{instruction}", "input": "{input}"})
    return {
        **card(path, table, model),
        "weights_file": "no weights committed: the chapter keeps none",
        "weights_sha256": None,
        "title": ("chapter 6's instruction-tuned mini model (procedural tasks), trained by the "
                  f"site build with the chapter's recipe ({about['steps']:,} steps, seed {about['seed']}), stored as "
                  "the mini model plus an int8 difference"),
        "score": (f"Its exact match on chapter 6's {len(test)} test tasks, computed by the site build "
                  f"on this very file: {score['all']:.3f} (chapter 6's own run: {book_score:.3f}; the "
                  f"base model's: {before['all']:.3f})"),
        "exact_match": score, "base_exact_match": before, "pytorch_exact_match": about["pytorch_exact_match"],
        "same_tokens_as_pytorch": f"{agree} of {len(test)}",
        "max_new_tokens": new_tokens, "base": "mini-shakespeare", "examples": examples,
        "prompt_with_input": template, "prompt_without_input": response_prompt({"instruction": "{instruction}"}),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    _shared.clear()
    (out / "models").mkdir(parents=True)
    bundle(out)
    import onnxruntime as ort

    sys.path.insert(0, str(ROOT))
    from tools.offline import offline_environment

    # the site shows the offline profile: chapter 6's model is trained as the chapter's offline
    # run trains it, its tokenizer files fetched through the local mirror of the offline world
    offline_environment()
    models = {"mini-shakespeare": mini_model(out), "spam-classifier": spam_model(out)}
    base = ort.InferenceSession(str(out / models["mini-shakespeare"]["file"]), providers=["CPUExecutionProvider"])
    models["mini-instruct"] = instruct(out, base)
    (out / "models.json").write_text(json.dumps(models, indent=2) + "\n", encoding="utf-8")
    files = {m["file"]: m["bytes"] - sum(e["bytes"] for e in m["external"]) for m in models.values()}
    files[f"models/{SHARED}"] = models["mini-shakespeare"]["external"][0]["bytes"]
    total = sum(files.values())  # each file once: the shared weights are downloaded once
    print(f"widgets in {out}: {len(models)} model(s), {total / 1e6:.1f} MB of models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
