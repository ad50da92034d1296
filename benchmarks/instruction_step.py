"""How long one training step of the full-profile instruction fine-tuning takes on this machine.

    python benchmarks/instruction_step.py [--steps 3] [--warmup 1] [--device cpu] [--length N]

The full profile of chapter 6 fine-tunes GPT-2 Medium (355M, tied output head as OpenAI's
checkpoint has it) on the 935 training records, batch 8, 2 epochs: 116 steps per epoch (the
chapter drops the last, incomplete batch, as the book does), 232 in all, AdamW (lr 5e-5, weight
decay 0.1, constant, no gradient clipping). A batch is padded
to its longest record, so its length varies; the script builds the chapter's shuffled batches
with :func:`gpt2lib.data.instructions.collate` and times steps at their median length (or
``--length``). Timing does not depend on the weights' values, so the model has the 355M
*shape* with random weights (no download). It times ``--steps`` real steps (forward, loss,
backward, AdamW) after ``--warmup`` untimed ones, and one evaluation batch
(forward only), then extrapolates to the whole run. On a machine shared with other work the wall-clock time
per step depends on the load, so it also reports the CPU time per step, which does not.

The data comes through the download layer (set ``GPT2LIB_MIRROR`` offline); ``--length``
skips it.

It also prints the floating-point work of the run, ``6 N`` FLOPs per token (forward ``2 N``,
backward ``4 N``; Kaplan et al., 2020, sec. 2.1) over the padded tokens of all 232 batches,
which is what the Colab T4 estimate in the chapter divides by an assumed throughput.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

import torch
from torch.utils.data import DataLoader

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.loss import calc_loss_batch
from gpt2lib.train import TrainConfig, build_optimizer

BATCH_SIZE = 8
EPOCHS = 2
TRAIN_RECORDS = 935


def batch_lengths(seed: int = 123) -> list[int]:
    """The padded length of every training batch of one epoch, in a shuffled order."""
    from gpt2lib.data.instructions import (
        InstructionDataset,
        collate,
        load_instructions,
        split_instructions,
    )
    from gpt2lib.tokenizer import get_tokenizer

    train_data, _, _ = split_instructions(load_instructions())
    dataset = InstructionDataset(train_data, get_tokenizer())
    loader = DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=partial(collate, allowed_max_length=1024),
    )
    return [inputs.shape[1] for inputs, _ in loader]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--length", type=int, default=None, help="tokens per row (no data)")
    args = parser.parse_args()

    steps_per_epoch = TRAIN_RECORDS // BATCH_SIZE  # drop_last=True
    total_steps = EPOCHS * steps_per_epoch
    if args.length is None:
        lengths = batch_lengths()
        length = int(statistics.median(lengths))
        padded_tokens = EPOCHS * BATCH_SIZE * sum(lengths)
        print(
            f"batch lengths over one epoch: median {statistics.median(lengths):.0f}, "
            f"mean {statistics.mean(lengths):.1f}, min {min(lengths)}, max {max(lengths)}"
        )
    else:
        length = args.length
        padded_tokens = total_steps * BATCH_SIZE * length

    torch.manual_seed(123)
    device = torch.device(args.device)
    cfg = GPTConfig.gpt2("355M", tie_embeddings=True)
    model = GPTModel(cfg).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    train_cfg = TrainConfig(
        epochs=EPOCHS, lr=5e-5, weight_decay=0.1, schedule="constant", grad_clip=None
    )
    optimizer = build_optimizer(model, train_cfg)
    inputs = torch.randint(0, cfg.vocab_size, (BATCH_SIZE, length), device=device)
    targets = torch.randint(0, cfg.vocab_size, (BATCH_SIZE, length), device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    step_times, cpu_times = [], []
    for i in range(args.warmup + args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = calc_loss_batch(model, (inputs, targets), device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        if i >= args.warmup:
            step_times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        print(f"  step {i + 1}: {time.perf_counter() - start:.2f} s", flush=True)

    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        calc_loss_batch(model, (inputs, targets), device)
        sync()
        eval_batch = time.perf_counter() - start

    step = statistics.median(step_times)
    flops_step = 6 * n_params * BATCH_SIZE * length
    flops_run = 6 * n_params * padded_tokens
    print(f"model: GPT-2 355M shape (tied head), random weights, {n_params:,} parameters")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"threads: {torch.get_num_threads()}, device: {device}, load average {load}")
    print(f"batch {BATCH_SIZE} x {length} tokens; {total_steps} steps ({EPOCHS} epochs)")
    print(
        f"training step: {step:.2f} s (median of {len(step_times)}; "
        f"min {min(step_times):.2f} s, max {max(step_times):.2f} s), "
        f"{flops_step / step / 1e9:.0f} GFLOP/s at 6N per token"
    )
    cpu = statistics.median(cpu_times)
    threads = torch.get_num_threads()
    print(
        f"CPU time per step: {cpu:.1f} s over {threads} threads; on an idle machine a step "
        f"would take about {cpu / threads:.1f} s or a little more "
        f"({cpu / threads * total_steps / 3600:.2f} h for the run)"
    )
    print(f"evaluation batch (forward only): {eval_batch:.2f} s")
    print(f"full run, training steps only: {step * total_steps / 3600:.2f} h")
    print(
        f"work of the full run: 6 N x {padded_tokens:,} padded tokens = {flops_run:.3g} FLOP; "
        f"at 3 TFLOP/s (a T4 in float32 at ~35 % of 8.1 TFLOP/s): {flops_run / 3e12:.0f} s"
    )


if __name__ == "__main__":
    main()
