"""Pretrain the mini GPT-2 (:mod:`gpt2lib.mini`) on Tiny Shakespeare and save it with a manifest.

It trains on the first 90 % of Tiny Shakespeare's characters with :func:`gpt2lib.train.train`
and validates on the last 10 %. Reproduce the committed model (its manifest records the
settings; it was trained when this command was ``python -m gpt2lib.pretrain``)::

    python -m tools.pretrain --out gpt2lib/pretrained/mini-shakespeare

Data-parallel under ``torchrun``; the loader's batch size is per process, so halve it to keep
the global batch::

    torchrun --nproc_per_node=2 -m tools.pretrain --batch-size 4 --out /tmp/mini
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import torch

from gpt2lib.mini import MINI_CONFIG, MINI_NAME, load_mini, save_mini
from gpt2lib.model import GPTModel

if TYPE_CHECKING:
    import tiktoken
    from torch.utils.data import DataLoader

    from gpt2lib.checkpoint import History
    from gpt2lib.train import TrainConfig

SAMPLE_PROMPTS = ("ROMEO:\n", "First Citizen:\nWe are", "KING HENRY:\nNow, my lords,")


# ---------------------------------------------------------------------------------------------
# Settings and the command line


@dataclass(frozen=True)
class PretrainSettings:
    """Every setting of a pretraining run; ``python -m tools.pretrain`` fills it from flags
    of the same names (``max_steps`` is ``--max-steps``)."""

    out: str  # directory of the saved model
    max_steps: int = 700
    batch_size: int = 8  # per process
    stride: int = 64  # token offset between training windows
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta2: float = 0.95
    dropout: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 40
    eval_batches: int = 10
    seed: int = 123
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    threads: int = 0  # CPU threads (0: PyTorch's default)
    device: str | None = None
    checkpoint: str | None = None  # default: <GPT2LIB_HOME>/checkpoints/mini-shakespeare.pt
    resume: bool = False  # continue from the checkpoint
    progress: bool = True
    compile: Literal["auto", "on", "off"] = "auto"  # torch.compile the steps (auto: on CUDA)

    # settings that do not change what is trained, left out of the recorded command
    NOT_RECORDED = ("out", "device", "checkpoint", "resume", "progress", "compile")

    def command(self) -> str:
        """The full command line, every setting that shapes the model spelled out."""
        parts = ["python", "-m", "tools.pretrain", "--out", self.out]
        for f in dataclasses.fields(self):
            if f.name not in self.NOT_RECORDED and getattr(self, f.name) is not None:
                parts += ["--" + f.name.replace("_", "-"), str(getattr(self, f.name))]
        return shlex.join(parts)

    def train_config(self, checkpoint: str) -> TrainConfig:
        from gpt2lib.train import TrainConfig

        return TrainConfig(
            max_steps=self.max_steps, lr=self.lr, min_lr=self.min_lr,
            warmup_steps=self.warmup_steps, weight_decay=self.weight_decay,
            betas=(0.9, self.beta2), grad_clip=self.grad_clip, eval_every=self.eval_every,
            eval_batches=self.eval_batches, checkpoint_path=checkpoint,
            checkpoint_every=self.eval_every * 5, seed=self.seed, device=self.device,
            dtype=self.dtype, progress=self.progress,
            compile="auto" if self.compile == "auto" else self.compile == "on",
            fused_optimizer="auto" if self.compile == "auto" else self.compile == "on",
        )  # fmt: skip


def parse_args(argv: list[str] | None = None) -> PretrainSettings:
    """The command line, as :class:`PretrainSettings` (one flag per field)."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.pretrain",
        description="Pretrain the mini GPT-2 on Tiny Shakespeare and save it with a manifest.",
    )
    defaults = PretrainSettings(out="")
    for f in dataclasses.fields(PretrainSettings):
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        if f.name == "out":
            parser.add_argument(flag, required=True, help="directory of the saved model")
        elif f.name == "progress":
            parser.add_argument("--no-progress", dest="progress", action="store_false")
        elif isinstance(default, bool):
            parser.add_argument(flag, action="store_true")
        elif f.name == "dtype":
            parser.add_argument(flag, choices=("float32", "bfloat16"), default=default)
        elif f.name == "compile":
            parser.add_argument(flag, choices=("auto", "on", "off"), default=default,
                                help="torch.compile and fused AdamW (auto: on CUDA only)")  # fmt: skip
        else:
            parser.add_argument(flag, type=type(default) if default is not None else str,
                                default=default)  # fmt: skip
    return PretrainSettings(**vars(parser.parse_args(argv)))


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


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class _Data:
    tokenizer: tiktoken.Encoding
    train_ids: list[int]
    val_ids: list[int]
    train_loader: DataLoader
    val_loader: DataLoader


def _data(settings: PretrainSettings) -> _Data:
    """Tiny Shakespeare, split by characters (90 % / 10 %), as loaders of context windows."""
    from gpt2lib.data.text import (
        create_dataloader,
        encode,
        load_tiny_shakespeare,
        split_by_position,
    )
    from gpt2lib.tokenizer import get_tokenizer

    tokenizer = get_tokenizer()
    train_text, val_text = split_by_position(load_tiny_shakespeare(), 0.9)
    train_ids, val_ids = encode(train_text, tokenizer), encode(val_text, tokenizer)
    ctx, s = MINI_CONFIG.context_length, settings
    train_loader = create_dataloader(
        train_ids, s.batch_size, ctx, s.stride, shuffle=True, drop_last=True, seed=s.seed
    )
    # context-length windows, each validation token predicted once; shuffled (seeded) so that
    # the evaluations during training, which read the first --eval-batches, sample all of it
    val_loader = create_dataloader(
        val_ids, s.batch_size, ctx, ctx, shuffle=True, drop_last=False, seed=s.seed
    )
    return _Data(tokenizer, train_ids, val_ids, train_loader, val_loader)


def _final_losses(model: GPTModel, data: _Data, settings: PretrainSettings) -> dict[str, float]:
    """Losses of the saved model: all of validation, as many windows drawn from training."""
    from gpt2lib.data.text import create_dataloader
    from gpt2lib.loss import calc_loss_loader, perplexity

    ctx, device = MINI_CONFIG.context_length, next(model.parameters()).device
    train_sample = create_dataloader(
        data.train_ids, settings.batch_size, ctx, ctx, shuffle=True, drop_last=False,
        seed=settings.seed,
    )  # fmt: skip
    train = calc_loss_loader(model, train_sample, device, num_batches=len(data.val_loader))
    val = calc_loss_loader(model, data.val_loader, device)
    return {
        "evaluation": (
            "float16 weights; mean loss over non-overlapping context-length windows: all of "
            "the validation text, and as many windows sampled from the training text"
        ),
        "train_loss": round(train, 4),
        "train_perplexity": round(perplexity(train), 2),
        "val_loss": round(val, 4),
        "val_perplexity": round(perplexity(val), 2),
    }


def _samples(model: GPTModel, tokenizer: tiktoken.Encoding, seed: int) -> list[dict[str, str]]:
    """Sampled continuations of :data:`SAMPLE_PROMPTS`, and one greedy one."""
    from gpt2lib.generate import generate_text

    gen = torch.Generator().manual_seed(seed)
    sampled = "temperature 0.8, top_k 50, 80 new tokens"
    samples = [
        {"prompt": prompt, "settings": sampled,
         "text": generate_text(model, prompt, 80, tokenizer, temperature=0.8, top_k=50,
                               generator=gen)}
        for prompt in SAMPLE_PROMPTS
    ]  # fmt: skip
    greedy = generate_text(model, SAMPLE_PROMPTS[0], 60, tokenizer)
    return [*samples, {"prompt": SAMPLE_PROMPTS[0], "settings": "greedy, 60 new tokens",
                       "text": greedy}]  # fmt: skip


def _training_record(
    settings: PretrainSettings, history: History, data: _Data, cfg: TrainConfig,
    seconds: tuple[float, float], device: torch.device, world_size: int,
) -> dict[str, Any]:  # fmt: skip
    wall, cpu = seconds
    tokens = history.tokens_seen[-1]
    return {
        "steps": history.steps[-1],
        "tokens": tokens,
        "epochs": round(history.steps[-1] / len(data.train_loader), 3),
        "windows_per_epoch": len(data.train_loader.dataset),
        "global_batch_size": settings.batch_size * world_size,
        "processes": world_size,
        "dropout": settings.dropout,
        "train_config": {k: v for k, v in asdict(cfg).items() if k != "checkpoint_path"},
        "wall_time_s": round(wall, 1),
        "tokens_per_s": round(tokens / wall, 1),
        "device": str(device),
        "cpu_seconds": round(cpu, 1),  # this process's CPU time, all threads
        "cpu_threads": torch.get_num_threads(),
        "resumed": settings.resume,
    }


def pretrain(settings: PretrainSettings) -> dict[str, Any] | None:
    """Train, evaluate, sample and save the mini model; return its manifest (rank 0 only)."""
    from gpt2lib.data.text import TEXTS
    from gpt2lib.distributed import dist_info
    from gpt2lib.download import cache_dir
    from gpt2lib.train import train

    info = dist_info()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    data = _data(settings)
    checkpoint = settings.checkpoint or str(cache_dir() / "checkpoints" / f"{MINI_NAME}.pt")
    cfg = settings.train_config(checkpoint)
    torch.manual_seed(settings.seed)
    model = GPTModel(replace(MINI_CONFIG, drop_rate=settings.dropout))
    start, start_cpu = time.perf_counter(), time.process_time()
    history = train(model, data.train_loader, data.val_loader, cfg, resume=settings.resume)
    seconds = (time.perf_counter() - start, time.process_time() - start_cpu)
    if not info.is_main:
        return None

    device = next(model.parameters()).device
    save_mini(model, settings.out, {"name": MINI_NAME})
    model = load_mini(settings.out).to(device)  # evaluate exactly what was saved (float16)
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
            "train_tokens": len(data.train_ids),
            "val_tokens": len(data.val_ids),
        },  # fmt: skip
        "command": settings.command(),
        "training": _training_record(
            settings, history, data, cfg, seconds, device, info.world_size
        ),  # fmt: skip
        "final": _final_losses(model, data, settings),
        "history": _downsample(history.to_dict()),
        "samples": _samples(model, data.tokenizer, settings.seed),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }
    save_mini(model, settings.out, manifest)
    return manifest


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    keep_freed_memory()
    manifest = pretrain(settings)
    if manifest is not None:
        final, training = manifest["final"], manifest["training"]
        print(
            f"saved {settings.out}: val loss {final['val_loss']:.3f} "
            f"(perplexity {final['val_perplexity']:.1f}), "
            f"{training['tokens']:,} tokens in {training['wall_time_s']} s",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
