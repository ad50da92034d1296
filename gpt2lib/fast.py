"""Fast paths for inference: bfloat16 weights and the compiled static decode step, chosen by
measuring them on the device.

The model's float32 path is the reference (it equals Hugging Face's GPT-2 to 1e-4). Two
switches trade exactness or start-up time for speed:

- **bfloat16** keeps float32's exponent range with an 8-bit mantissa: matrix multiplications
  run about twice as fast where the hardware has bf16 instructions (CUDA GPUs from Ampere on;
  x86 CPUs with AVX512-BF16 or AMX) and the weights take half the memory. Logits move by about
  1 %, so sampled text changes but the top-1 token mostly does not (the benchmark suite
  measures the agreement).
- **transposed weight storage** (float32 on a CPU): decoding one token at a time multiplies
  a vector by each weight matrix, limited by how fast the weights stream from memory, and the
  CPU kernels PyTorch calls read a weight laid out (in, out) faster than ``nn.Linear``'s
  (out, in). :func:`transpose_weight_storage` keeps the shapes and values and changes only
  the memory order (as ``channels_last`` does for images); measured on a 2-core AMD EPYC, it
  gave about 1.2x the tokens/s at batch 1.
- **compile**: the static decode step of :mod:`gpt2lib.static_decode`, compiled once and run
  under CUDA graphs on a GPU. It pays off where launching kernels costs more than running them
  (a GPU at small batch sizes); compiling takes tens of seconds, so on a CPU, where it gains
  little, ``"auto"`` does not try it.

Which combination is fastest depends on the device and the batch size (on a 2-core CPU bf16
decoded 2.4x faster; on an H200 eager bf16 was no faster than float32, and compiling the
whole model, recompiled at every position, halved the speed). So ``"auto"`` measures: it times
a short greedy generation with each candidate at each batch size it will be used for, and
keeps a candidate only if it beats the default float32 path at every one of them.
:func:`~gpt2lib.generate.generate`'s own defaults stay exact (float32, the KV cache, eager).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .static_decode import decoder_for, forget_decoder

Auto = Literal["auto"]
MARGIN = 1.05  # a candidate must be this much faster than the default at every batch size


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (not by emulation)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so guarded
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


@dataclass(frozen=True)
class Setting:
    """One way to run inference: weight dtype (None: the model's), compiled static decode
    step, weights stored transposed."""

    dtype: torch.dtype | None = None
    compile: bool = False
    transpose: bool = False

    def __str__(self) -> str:
        parts = [str(self.dtype).replace("torch.", "") if self.dtype else "model dtype"]
        parts.append("compiled" if self.compile else "eager")
        return ", ".join(parts + (["transposed weights"] if self.transpose else []))


def transpose_weight_storage(model: nn.Module) -> nn.Module:
    """Store every ``nn.Linear`` weight column-major, in place: same shapes, values and results.

    Each (out, in) weight becomes a view of a contiguous (in, out) tensor, so ``F.linear``'s
    ``x @ weight.T`` multiplies by a row-major matrix. Tied weights stay tied (the parameter
    objects are kept). For float32 inference on a CPU; ``safetensors`` needs
    ``.contiguous()`` tensors to save such a model.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and module.weight.stride(0) != 1:
                module.weight.data = module.weight.data.t().contiguous().t()  # (out, in) view
    return model


def candidates(
    device: torch.device | str,
    dtype: torch.dtype | Auto | None = "auto",
    compile: bool | Auto = "auto",
) -> list[Setting]:
    """The settings ``"auto"`` tries on ``device``, the default (exact float32) first.

    bfloat16 is tried only where it is native, compilation only on CUDA, transposed weights
    only for float32 on a CPU; a fixed ``dtype`` or ``compile`` is the only choice for it.
    """
    device = torch.device(device)
    dtypes = [None, torch.bfloat16] if bf16_is_native(device) else [None]
    compiles = [False, True] if device.type == "cuda" else [False]
    dtypes = dtypes if dtype == "auto" else [dtype]
    compiles = compiles if compile == "auto" else [bool(compile)]
    out = [Setting(d, c) for d in dtypes for c in compiles]
    if device.type == "cpu" and dtypes[0] in (None, torch.float32) and not compiles[0]:
        out.append(Setting(dtypes[0], transpose=True))
    return out


def decode_rate(
    model: nn.Module, batch_size: int, compile: bool, prompt_len: int = 32, new_tokens: int = 32
) -> float:
    """New tokens per second of greedy generation (after one warm-up run, best of two)."""
    from .generate import generate

    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    prompt_len = min(prompt_len, model.cfg.context_length - new_tokens)
    idx = torch.randint(0, model.cfg.vocab_size, (batch_size, prompt_len), generator=gen)
    idx = idx.to(device)
    generate(model, idx, new_tokens, compile=compile)  # warm-up (and compilation)
    best = float("inf")
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        generate(model, idx, new_tokens, compile=compile)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return batch_size * new_tokens / best


def choose(rates: dict[Setting, dict[int, float]]) -> Setting:
    """The setting to use: the one whose worst speed-up over the default (the first key) is
    largest, if that is at least :data:`MARGIN` at every batch size; else the default."""
    default, *others = rates

    def worst(setting: Setting) -> float:
        return min(rates[setting][b] / rates[default][b] for b in rates[default])

    best = max(others, key=worst, default=None)
    return best if best is not None and worst(best) >= MARGIN else default


def optimize_for_inference(
    model: nn.Module,
    dtype: torch.dtype | Auto | None = "auto",
    compile: bool | Auto = "auto",
    batch_sizes: Sequence[int] = (1, 8),
) -> nn.Module:
    """Put ``model`` in eval mode with the fastest measured dtype and decode path; return it.

    ``"auto"`` (either argument) times greedy decoding of each :func:`candidates` setting at
    each of ``batch_sizes`` and keeps the float32 default unless a candidate is faster at all
    of them (see :func:`choose`); ``model.inference_settings`` records the choice and the
    tokens/s measured. A given ``dtype`` (None: keep the model's) and ``compile`` are applied
    as they are. ``compile=True`` makes :func:`~gpt2lib.generate.generate` use the compiled
    static decode step for this model by default. Works in place.
    """
    if dtype not in ("auto", None) and not (
        isinstance(dtype, torch.dtype) and dtype.is_floating_point
    ):
        raise TypeError(
            f"dtype must be a floating-point torch.dtype, 'auto' or None, got {dtype!r}"
        )
    model.eval()
    device = next(model.parameters()).device
    options = candidates(device, dtype, compile)
    rates: dict[Setting, dict[int, float]] = {}
    if len(options) > 1:
        for setting in options:
            # the model itself where only the decode path differs: its compiled step, if
            # chosen, is then kept rather than compiled again
            same_weights = setting.dtype is None and not setting.transpose
            trial = model if same_weights else apply(copy.deepcopy(model), setting)
            rates[setting] = {b: decode_rate(trial, b, setting.compile) for b in batch_sizes}
            if trial is not model:
                forget_decoder(trial)
    chosen = choose(rates) if rates else options[0]
    apply(model, chosen)
    model.inference_settings = {  # type: ignore[assignment]
        "chosen": str(chosen),
        "dtype": str(next(model.parameters()).dtype),
        "compile": chosen.compile,
        "measured_tokens_per_s": {str(k): r for k, r in rates.items()},
    }
    return model


def apply(model: nn.Module, setting: Setting) -> nn.Module:
    """Give ``model`` the dtype, decode path and weight layout of ``setting``, in place."""
    if setting.dtype is not None:
        model.to(setting.dtype)
    if setting.transpose:
        transpose_weight_storage(model)
    if setting.compile:
        decoder_for(model)  # the model's decoder, made now or kept from a measurement
    else:
        forget_decoder(model)
    return model
