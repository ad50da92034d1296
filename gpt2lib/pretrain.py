"""The mini GPT-2: a 7.3 M-parameter GPT-2 the project pretrains on Tiny Shakespeare.

GPT-2's tokenizer and architecture (Radford et al., 2019) at a size a laptop CPU trains in
under half an hour: 128-dimensional embeddings, 4 layers, 4 heads, a context of 256 tokens,
and the output head tied to the token embedding, as in GPT-2 (so the 50,257 x 128 matrix is
stored once). It trains on the first 90 % of Tiny Shakespeare's characters with
:func:`gpt2lib.train.train` and is validated on the last 10 %. It is not OpenAI's GPT-2: the
offline profile of the book uses it where a model that has learned something beats random
weights, and says what it is.

Reproduce the committed model (the manifest records the exact command and settings)::

    python -m gpt2lib.pretrain --out gpt2lib/pretrained/mini-shakespeare

The same command runs data-parallel, e.g. on two GPUs or two groups of CPU cores; the loader's
batch size is per process, so halve it to keep the global batch::

    torchrun --nproc_per_node=2 -m gpt2lib.pretrain --batch-size 4 --out /tmp/mini

Load the committed model (float32, eval mode, its sha256 checked against the manifest)::

    from gpt2lib.pretrain import load_mini
    model = load_mini()
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from .config import GPTConfig
from .files import atomic_path, atomic_write_text, sha256_file
from .model import GPTModel

MINI_NAME = "mini-shakespeare"
MINI_CONFIG = GPTConfig(
    vocab_size=50257,
    context_length=256,
    emb_dim=128,
    n_heads=4,
    n_layers=4,
    drop_rate=0.0,  # training used dropout (see the manifest); inference needs none
    qkv_bias=True,
    tie_embeddings=True,
)
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
SAMPLE_PROMPTS = ("ROMEO:\n", "First Citizen:\nWe are", "KING HENRY:\nNow, my lords,")


# ---------------------------------------------------------------------------------------------
# Saving and loading


def save_mini(model: GPTModel, out_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` (float16) and ``manifest.json`` (with the file's sha256).

    A tied output head is stored once, as ``wte.weight`` (OpenAI's format keeps only ``wte``).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to("cpu", torch.float16).contiguous()
        for k, v in model.state_dict().items()
        if not (model.cfg.tie_embeddings and k == "lm_head.weight")
    }
    weights = out / WEIGHTS_FILE
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "name": manifest.get("name", "")})
    manifest = {
        **manifest,
        "weights": {
            "file": WEIGHTS_FILE,
            "dtype": "float16",
            "bytes": weights.stat().st_size,
            "sha256": sha256_file(weights),
        },
    }
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
    return out


def read_manifest(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest of the mini model in directory ``path`` (default: the committed one)."""
    directory = Path(path) if path is not None else PRETRAINED_DIR / MINI_NAME
    file = directory / MANIFEST_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no {MANIFEST_FILE} in {directory}")
    return json.loads(file.read_text(encoding="utf-8"))


def load_mini(path: str | os.PathLike | None = None, verify: bool = True) -> GPTModel:
    """The mini GPT-2 as a float32 :class:`GPTModel` in eval mode.

    ``path`` is a directory written by :func:`save_mini` (default: the model committed in the
    package). With ``verify``, the weights file's sha256 must match the manifest's.
    """
    from safetensors.torch import load_file

    directory = Path(path) if path is not None else PRETRAINED_DIR / MINI_NAME
    manifest = read_manifest(directory)
    weights = directory / manifest["weights"]["file"]
    if verify:
        actual, expected = sha256_file(weights), manifest["weights"]["sha256"]
        if actual != expected:
            raise ValueError(
                f"{weights} has sha256 {actual}, but {MANIFEST_FILE} says {expected}: the file "
                "is corrupt or does not belong to this manifest"
            )
    cfg = GPTConfig(**manifest["config"])
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["wte.weight"]
    model = GPTModel(cfg)
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Training


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gpt2lib.pretrain",
        description="Pretrain the mini GPT-2 on Tiny Shakespeare and save it with a manifest.",
    )
    p.add_argument("--out", required=True, help="directory for model.safetensors + manifest.json")
    p.add_argument("--max-steps", type=int, default=700)
    p.add_argument("--batch-size", type=int, default=8, help="per process")
    p.add_argument("--stride", type=int, default=64, help="token offset between training windows")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr", type=float, default=3e-4)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=40)
    p.add_argument("--eval-batches", type=int, default=10)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    p.add_argument("--device", default=None)
    p.add_argument("--checkpoint", default=None, help="default: <GPT2LIB_HOME>/checkpoints/")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--no-progress", action="store_true")
    return p


def _downsample(history: dict[str, Any], max_points: int = 200) -> dict[str, Any]:
    n = len(history["steps"])
    if n <= max_points:
        return history
    keep = sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})

    def pick(values: list[Any]) -> list[Any]:
        return [values[i] for i in keep]

    out = {k: pick(v) for k, v in history.items() if isinstance(v, list)}
    out["metrics"] = {k: pick(v) for k, v in history.get("metrics", {}).items()}
    return out


def _command(args: argparse.Namespace) -> str:
    """The full command line with every setting spelled out."""
    parts = ["python", "-m", "gpt2lib.pretrain", "--out", args.out]
    for action in _parser()._actions:
        if action.dest in ("help", "resume", "no_progress", "checkpoint", "device", "out"):
            continue
        value = getattr(args, action.dest)
        if value is not None:
            parts += [action.option_strings[0], str(value)]
    return shlex.join(parts)


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse (Linux only; True if it agreed).

    A training step on the CPU allocates and frees several tensors of hundreds of megabytes
    (the logits are batch x context x 50,257). glibc hands blocks that large straight back to
    the operating system, so every step pays again for fresh, zeroed pages; measured here, that
    doubles the time of a step of the mini model. Raising the mmap and trim thresholds keeps
    the memory in the process (peak memory is unchanged).
    """
    import ctypes
    import ctypes.util

    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        mmap_ok = libc.mallopt(m_mmap_threshold, 1 << 30)
        return bool(mmap_ok and libc.mallopt(m_trim_threshold, (1 << 31) - 1))
    except (OSError, AttributeError):
        return False


def pretrain(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train, evaluate, sample and save the mini model; return its manifest (rank 0 only)."""
    from .data.text import (
        TEXTS,
        create_dataloader,
        encode,
        load_tiny_shakespeare,
        split_by_position,
    )
    from .distributed import dist_info
    from .download import cache_dir
    from .generate import generate_text
    from .tokenizer import get_tokenizer
    from .train import TrainConfig, calc_loss_loader, perplexity, train

    info = dist_info()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tokenizer = get_tokenizer()
    text = load_tiny_shakespeare()
    train_text, val_text = split_by_position(text, 0.9)  # by characters, as the book splits
    train_ids, val_ids = encode(train_text, tokenizer), encode(val_text, tokenizer)
    ctx = MINI_CONFIG.context_length
    train_loader = create_dataloader(
        train_ids, args.batch_size, ctx, args.stride, shuffle=True, drop_last=True, seed=args.seed
    )
    # context-length windows, each validation token predicted once; shuffled (seeded) so that
    # the evaluations during training, which read the first --eval-batches, sample all of it
    val_loader = create_dataloader(
        val_ids, args.batch_size, ctx, ctx, shuffle=True, drop_last=False, seed=args.seed
    )
    checkpoint = args.checkpoint or str(cache_dir() / "checkpoints" / f"{MINI_NAME}.pt")
    cfg = TrainConfig(
        max_steps=args.max_steps,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        betas=(0.9, args.beta2),
        grad_clip=args.grad_clip,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        checkpoint_path=checkpoint,
        checkpoint_every=args.eval_every * 5,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        progress=not args.no_progress,
    )

    torch.manual_seed(args.seed)
    model = GPTModel(replace(MINI_CONFIG, drop_rate=args.dropout))
    start, start_cpu = time.perf_counter(), time.process_time()
    history = train(model, train_loader, val_loader, cfg, resume=args.resume)
    train_seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    if not info.is_main:
        return None

    out = Path(args.out)
    save_mini(model, out, {"name": MINI_NAME, "config": asdict(MINI_CONFIG)})
    device = next(model.parameters()).device
    model = load_mini(out).to(device)  # evaluate exactly what was saved (float16 -> float32)
    # training loss on as many context-length windows as validation has, drawn across the text
    train_sample = create_dataloader(
        train_ids, args.batch_size, ctx, ctx, shuffle=True, drop_last=False, seed=args.seed
    )
    final_train = calc_loss_loader(model, train_sample, device, num_batches=len(val_loader))
    final_val = calc_loss_loader(model, val_loader, device)
    tokens = history.tokens_seen[-1]
    gen = torch.Generator().manual_seed(args.seed)
    samples = [
        {
            "prompt": prompt,
            "settings": "temperature 0.8, top_k 50, 80 new tokens",
            "text": generate_text(
                model, prompt, 80, tokenizer, temperature=0.8, top_k=50, generator=gen
            ),
        }
        for prompt in SAMPLE_PROMPTS
    ] + [
        {
            "prompt": SAMPLE_PROMPTS[0],
            "settings": "greedy, 60 new tokens",
            "text": generate_text(model, SAMPLE_PROMPTS[0], 60, tokenizer),
        }
    ]
    src = TEXTS["tiny-shakespeare"]
    manifest = {
        "name": MINI_NAME,
        "description": (
            "A 7.3 M-parameter model with GPT-2's architecture and tokenizer, pretrained by gpt2lib "
            "on Tiny Shakespeare. It is not OpenAI's GPT-2."
        ),
        "config": asdict(MINI_CONFIG),
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus": {
            "name": "Tiny Shakespeare",
            "url": src.url,
            "sha256": src.sha256,
            "bytes": src.size,
            "split": "first 90 % of the characters train, last 10 % validate",
            "train_tokens": len(train_ids),
            "val_tokens": len(val_ids),
        },
        "command": _command(args),
        "training": {
            "steps": history.steps[-1],
            "tokens": tokens,
            "epochs": round(history.steps[-1] / len(train_loader), 3),
            "windows_per_epoch": len(train_loader.dataset),
            "global_batch_size": args.batch_size * info.world_size,
            "processes": info.world_size,
            "dropout": args.dropout,
            "train_config": {k: v for k, v in asdict(cfg).items() if k != "checkpoint_path"},
            "wall_time_s": round(train_seconds, 1),
            "tokens_per_s": round(tokens / train_seconds, 1),
            "device": str(device),
            "cpu_seconds": round(cpu_seconds, 1),  # this process's CPU time, all threads
            "cpu_threads": torch.get_num_threads(),
            "resumed": bool(args.resume),
        },
        "final": {
            "evaluation": (
                "float16 weights; mean loss over non-overlapping context-length windows: all of "
                "the validation text, and as many windows sampled from the training text"
            ),
            "train_loss": round(final_train, 4),
            "train_perplexity": round(perplexity(final_train), 2),
            "val_loss": round(final_val, 4),
            "val_perplexity": round(perplexity(final_val), 2),
        },
        "history": _downsample(history.to_dict()),
        "samples": samples,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }
    save_mini(model, out, manifest)
    return manifest


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    keep_freed_memory()
    manifest = pretrain(args)
    if manifest is not None:
        final = manifest["final"]
        print(
            f"saved {args.out}: val loss {final['val_loss']:.3f} "
            f"(perplexity {final['val_perplexity']:.1f}), "
            f"{manifest['training']['tokens']:,} tokens in {manifest['training']['wall_time_s']} s",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
