"""Training throughput: gpt2lib's training step against Hugging Face's, eager and compiled.

Both sides train the same weights on the same batch with the same optimizer: AdamW over
:func:`gpt2lib.train.build_optimizer`'s parameter groups (fused where
``TrainConfig(fused_optimizer="auto")`` fuses, i.e. on CUDA), gradient clipping at 1.0, and
bfloat16 autocast where bf16 is native. The gpt2lib side is the body of
:func:`gpt2lib.train.train`'s step (``torch.compile`` of the model, as ``TrainConfig(compile=True)``
does); the reference is ``GPT2LMHeadModel`` with the same loss. Model FLOPs utilisation (MFU)
is the achieved FLOP/s (3x the forward's matrix-multiply FLOPs: forward plus backward) over
the ``torch.mm`` peak of the autocast dtype, measured in the same run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.harness import forward_flops, matmul_peak
from benchmarks.timing import time_interleaved
from gpt2lib.fast import bf16_is_native
from gpt2lib.loss import lm_loss
from gpt2lib.train import TrainConfig, build_optimizer


def _stepper(
    net: nn.Module,
    model: nn.Module,
    logits_of: Callable[[nn.Module], torch.Tensor],
    targets: torch.Tensor,
    cfg: TrainConfig,
    autocast: Any,
) -> Callable[[], None]:
    """One optimizer step of ``net`` (``model`` or its compiled wrapper), as ``train`` runs it."""
    optimizer = build_optimizer(model, cfg)
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def step() -> None:
        with autocast():
            loss = lm_loss(logits_of(net), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)  # type: ignore[arg-type]
        optimizer.step()

    return step


def bench_training(
    ours: nn.Module,
    hf: Any,
    batch: int,
    seq: int,
    reps: int,
    device: torch.device,
    compiled: bool,
    matmul_size: int = 2048,
) -> dict[str, Any]:
    """Tokens/s and MFU of a training step, gpt2lib vs transformers, eager (and compiled)."""
    cfg = TrainConfig(max_steps=1, lr=1e-4, device=str(device))
    bf16 = bf16_is_native(device)
    dtype = torch.bfloat16 if bf16 else torch.float32

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    gen = torch.Generator().manual_seed(7)
    x = torch.randint(0, ours.cfg.vocab_size, (batch, seq), generator=gen).to(device)
    y = torch.randint(0, ours.cfg.vocab_size, (batch, seq), generator=gen).to(device)
    sides = {
        "gpt2lib": (copy.deepcopy(ours).train(), lambda net: net(x)),
        "transformers": (
            copy.deepcopy(hf).train(),
            lambda net: net(input_ids=x, use_cache=False).logits,
        ),
    }
    cases = {}
    for name, (model, logits_of) in sides.items():
        cases[f"{name} eager"] = _stepper(model, model, logits_of, y, cfg, autocast)
        if compiled:
            twin = copy.deepcopy(model)  # its own weights and optimizer
            net = torch.compile(twin)
            cases[f"{name} compiled"] = _stepper(net, twin, logits_of, y, cfg, autocast)
    warm = {name: (lambda fn=fn: [fn() for _ in range(2)]) for name, fn in cases.items()}
    timings = time_interleaved(cases, dict.fromkeys(cases, batch * seq), reps, device, warm)
    flops = 3 * forward_flops(ours.cfg, batch, seq)
    peak = matmul_peak(dtype, device, reps, matmul_size)  # GFLOP/s
    return {
        "timings": {k: v.as_dict() for k, v in timings.items()},
        "mfu": {k: flops / v.median / 1e9 / peak for k, v in timings.items()},
        "peak_gflops": peak,
        "dtype": "bfloat16 autocast" if bf16 else "float32",
        "fused_optimizer": cfg.switch("fused_optimizer", device),
        "batch": [batch, seq],
    }
