"""Fast paths for inference: bfloat16 weights and ``torch.compile``, chosen for the device.

The model's float32 path is the reference (it equals Hugging Face's GPT-2 to 1e-4). Two
switches trade exactness or start-up time for speed:

- **bfloat16** keeps float32's exponent range with an 8-bit mantissa: matrix multiplications
  run about twice as fast where the hardware has bf16 instructions (CUDA GPUs from Ampere on;
  x86 CPUs with AVX512-BF16 or AMX) and the weights take half the memory. Logits move by about
  1 %, so sampled text changes but the top-1 token mostly does not (the benchmark suite
  measures the agreement).
- **torch.compile** fuses the small element-wise operations between the matrix
  multiplications. It pays off on a GPU; on a few CPU cores the compile time (tens of seconds)
  outweighs the gain for a chapter's worth of generation, so "auto" leaves it off there.

:func:`optimize_for_inference` applies both with ``"auto"`` defaults; :func:`generate`'s own
defaults stay exact (float32 weights, the KV cache, ``torch.inference_mode``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Auto = Literal["auto"]


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (not by emulation)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so guarded
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def fastest_settings(device: torch.device | str) -> dict[str, object]:
    """The dtype and compile switch that :func:`optimize_for_inference` picks for ``device``."""
    device = torch.device(device)
    dtype = torch.bfloat16 if bf16_is_native(device) else torch.float32
    return {"dtype": dtype, "compile": device.type == "cuda"}


def optimize_for_inference(
    model: nn.Module,
    dtype: torch.dtype | Auto | None = "auto",
    compile: bool | Auto = "auto",
) -> nn.Module:
    """Put ``model`` in eval mode, cast its weights to ``dtype`` and optionally compile it.

    ``"auto"`` picks the fastest choice for the device the model is on
    (:func:`fastest_settings`): bfloat16 where it is native, compilation on CUDA. ``dtype=None``
    keeps the current dtype. Works in place (``nn.Module.compile``, so the model keeps its
    class and attributes) and returns the model.
    """
    device = next(model.parameters()).device
    auto = fastest_settings(device)
    dtype = auto["dtype"] if dtype == "auto" else dtype
    compile = auto["compile"] if compile == "auto" else compile
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(
            f"dtype must be a floating-point torch.dtype, 'auto' or None, got {dtype!r}"
        )
    model.eval()
    if dtype is not None:
        model.to(dtype)
    if compile:
        model.compile(dynamic=True)
    return model
