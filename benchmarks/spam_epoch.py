"""How long one epoch of the full-profile LoRA spam fine-tuning takes on this machine.

    python -m benchmarks.spam_epoch [--steps 10] [--warmup 2] [--device cpu] [--threads N]

The full profile of chapter 5 trains GPT-2 124M with rank-16 LoRA on every linear layer (the
2-class head included), batch 8, on the 1,045 training messages padded to the longest one
(120 tokens): 130 optimizer steps per epoch (the last, incomplete batch is dropped, as in the
book; 131 without dropping it). Timing does not depend on the weights' values, so
the model here has the 124M *shape* with random weights (no download). The script times
``--steps`` real training steps (forward, loss, backward, AdamW step) on the chapter's batches
after ``--warmup`` untimed ones, then extrapolates to a whole epoch, with and without the
chapter's evaluations (every 50 steps, 5 batches of each loader, loss and accuracy).

The SMS data comes through the download layer (set ``GPT2LIB_MIRROR`` offline); with
``--synthetic`` random token IDs of the same shape are used instead.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.classifier import accuracy_eval, add_classification_head, classification_loss
from gpt2lib.lora import lora_report
from gpt2lib.train import TrainConfig, build_optimizer

BATCH_SIZE = 8
TRAIN_EXAMPLES = 1045
EVAL_EVERY, EVAL_BATCHES = 50, 5


def spam_loader(synthetic: bool, max_length: int) -> tuple[DataLoader, int]:
    if synthetic:
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 50257, (TRAIN_EXAMPLES, max_length), generator=gen)
        lengths = torch.randint(1, max_length + 1, (TRAIN_EXAMPLES,), generator=gen)
        labels = torch.randint(0, 2, (TRAIN_EXAMPLES,), generator=gen)
        data = TensorDataset(ids, labels, lengths)
    else:
        from gpt2lib.data.spam import SpamDataset, balance, load_sms_spam, split
        from gpt2lib.tokenizer import get_tokenizer

        train_df, _, _ = split(balance(load_sms_spam(), seed=123), (0.7, 0.1), seed=123)
        data = SpamDataset(train_df, get_tokenizer(), return_length=True)
        max_length = data.max_length
    loader = DataLoader(data, batch_size=BATCH_SIZE, shuffle=True, drop_last=True)
    return loader, max_length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--synthetic", action="store_true", help="random IDs, no data download")
    parser.add_argument("--max-length", type=int, default=120, help="with --synthetic only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--pool",
        choices=("last_real", "last"),
        default="last_real",
        help="last_real (the chapter's) runs each batch up to its longest message; last (the "
        "book's) always runs all max_length positions",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(123)
    device = torch.device(args.device)
    loader, max_length = spam_loader(args.synthetic, args.max_length)
    model = GPTModel(GPTConfig.gpt2("124M"))
    add_classification_head(model, num_classes=2, method="lora", rank=16, alpha=16)
    model.to(device).train()
    optimizer = build_optimizer(model, TrainConfig(epochs=5, lr=5e-4))
    steps_per_epoch = len(loader)

    batches = iter(loader)
    step_times = []
    for i in range(args.warmup + args.steps):
        batch = next(batches)
        start = time.perf_counter()
        loss = classification_loss(model, batch, device, pool=args.pool)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            step_times.append(time.perf_counter() - start)

    model.eval()
    eval_times = []
    with torch.no_grad():
        for _ in range(3):
            batch = next(batches)
            start = time.perf_counter()
            classification_loss(model, batch, device, pool=args.pool)
            accuracy_eval(model, [batch], device, pool=args.pool)
            if device.type == "cuda":
                torch.cuda.synchronize()
            eval_times.append(time.perf_counter() - start)

    step = statistics.mean(step_times)
    train_epoch = step * steps_per_epoch
    evals_per_epoch = steps_per_epoch // EVAL_EVERY
    eval_epoch = evals_per_epoch * 2 * EVAL_BATCHES * statistics.mean(eval_times)
    report = lora_report(model)
    print(f"model: GPT-2 124M shape, random weights; rank-16 LoRA ({report.lora:,} parameters)")
    print(f"threads: {torch.get_num_threads()}, device: {device}")
    print(
        f"batch {BATCH_SIZE} x {max_length} tokens (pool={args.pool}), "
        f"{steps_per_epoch} steps per epoch"
    )
    print(
        f"training step: {step:.2f} s (mean of {len(step_times)}; median "
        f"{statistics.median(step_times):.2f} s, min {min(step_times):.2f} s, "
        f"max {max(step_times):.2f} s)"
    )
    print(
        f"one epoch, training steps only: {train_epoch / 60:.1f} min "
        f"(at the fastest step's pace: {min(step_times) * steps_per_epoch / 60:.1f} min; "
        f"{step * (steps_per_epoch + 1) / 60:.1f} min for {steps_per_epoch + 1} steps, "
        "without drop_last)"
    )
    print(
        f"one epoch with evaluation every {EVAL_EVERY} steps ({EVAL_BATCHES} batches per loader): "
        f"{(train_epoch + eval_epoch) / 60:.1f} min"
    )
    print(f"5 epochs: {5 * (train_epoch + eval_epoch) / 60:.0f} min")
    if not math.isfinite(step):
        raise SystemExit("timing failed")


if __name__ == "__main__":
    main()
