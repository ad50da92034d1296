"""Fast paths for inference, chosen by measuring them on the device."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .generate import generate
from .static_decode import StaticDecoder

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
    model: nn.Module,
    batch_size: int,
    decoder: StaticDecoder | None = None,
    prompt_len: int = 32,
    new_tokens: int = 32,
    reps: int = 3,
) -> float:
    """New tokens per second of greedy generation (after one warm-up run, the median of
    ``reps``); ``decoder``: through its compiled step. On CUDA the clock waits for the device."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    prompt_len = min(prompt_len, model.cfg.context_length - new_tokens)
    idx = torch.randint(0, model.cfg.vocab_size, (batch_size, prompt_len), generator=gen)
    idx = idx.to(device)

    def run() -> float:
        start = time.perf_counter()
        decoder.generate(idx, new_tokens) if decoder else generate(model, idx, new_tokens)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    run()  # warm-up (and compilation)
    return batch_size * new_tokens / statistics.median(run() for _ in range(reps))


def choose(rates: dict[Setting, dict[int, float]]) -> Setting:
    """The setting to use: the one whose worst speed-up over the default (the first key) is
    largest, if that is at least :data:`MARGIN` at every batch size; else the default."""
    default, *others = rates

    def worst(setting: Setting) -> float:
        return min(rates[setting][b] / rates[default][b] for b in rates[default])

    best = max(others, key=worst, default=None)
    return best if best is not None and worst(best) >= MARGIN else default


@dataclass
class InferenceSettings:
    """What :func:`optimize_for_inference` did to ``model``: hold it, pass its ``decoder`` to
    :func:`~gpt2lib.generate.generate`, and call :meth:`undo` to go back.

    ``chosen``: the setting applied; ``measured``: new tokens/s of every candidate tried, per
    batch size (empty when nothing was measured); ``decoder``: the compiled static decode step
    when ``chosen.compile``, else None. ``settings.generate(idx, n, ...)`` takes
    :func:`~gpt2lib.generate.generate`'s arguments and decodes with the choice.
    """

    model: nn.Module
    chosen: Setting
    measured: dict[Setting, dict[int, float]] = field(default_factory=dict)
    decoder: StaticDecoder | None = None
    _original: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def generate(self, idx: torch.Tensor, max_new_tokens: int, **kwargs: Any) -> torch.Tensor:
        """:func:`~gpt2lib.generate.generate` with this setting (its compiled step, if chosen)."""
        if self.decoder is not None:
            return self.decoder.generate(idx, max_new_tokens, **kwargs)
        return generate(self.model, idx, max_new_tokens, **kwargs)

    def report(self) -> dict[str, Any]:
        """Plain data (for printing and JSON): the choice, the dtype, the tokens/s measured."""
        return {
            "chosen": str(self.chosen),
            "dtype": str(next(self.model.parameters()).dtype),
            "compile": self.chosen.compile,
            "measured_tokens_per_s": {str(k): dict(r) for k, r in self.measured.items()},
        }

    def undo(self) -> nn.Module:
        """Give the model back its weights as they were (dtype, values and memory layout) and
        drop the compiled decoder; return the model."""
        if self._original is not None:
            with torch.no_grad():
                for name, param in self.model.named_parameters():  # tied weights: once
                    param.data = self._original[name].to(param.device)
        elif self.chosen.transpose:
            with torch.no_grad():
                for module in self.model.modules():
                    if isinstance(module, nn.Linear):
                        module.weight.data = module.weight.data.contiguous()
        self.decoder = None
        self.chosen = Setting()
        return self.model


def optimize_for_inference(
    model: nn.Module,
    dtype: torch.dtype | Auto | None = "auto",
    compile: bool | Auto = "auto",
    batch_sizes: Sequence[int] = (1, 8),
    new_tokens: int = 32,
) -> InferenceSettings:
    """Put ``model`` in eval mode with the fastest measured dtype and decode path, in place, and
    return the :class:`InferenceSettings` that say what was chosen (and undo it).

    ``"auto"`` (either argument) times greedy decoding of ``new_tokens`` tokens with each
    :func:`candidates` setting at each of ``batch_sizes`` and keeps the float32 default unless
    a candidate is faster at all of them (see :func:`choose`). A given ``dtype`` (None: keep the model's) and ``compile``
    are applied as they are. With compilation chosen, ``settings.decoder`` is the compiled
    static decode step, which ``settings.generate(idx, n)`` uses.
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
    decoders: dict[Setting, StaticDecoder] = {}
    if len(options) > 1:
        for setting in options:
            # the model itself where only the decode path differs: its compiled step, if
            # chosen, is then kept rather than compiled again
            same_weights = setting.dtype is None and not setting.transpose
            trial = model if same_weights else _apply(copy.deepcopy(model), setting)
            decoder = StaticDecoder(trial) if setting.compile else None
            rates[setting] = {
                b: decode_rate(trial, b, decoder, new_tokens=new_tokens) for b in batch_sizes
            }
            if decoder is not None and trial is model:
                decoders[setting] = decoder
    chosen = choose(rates) if rates else options[0]
    original = None
    if chosen.dtype is not None and chosen.dtype != next(model.parameters()).dtype:
        original = {  # a copy to undo the cast with; the transposed layout needs none
            name: p.detach().to("cpu", copy=True)
            for name, p in model.named_parameters()
        }
    _apply(model, chosen)
    decoder = decoders.get(chosen) or (StaticDecoder(model) if chosen.compile else None)
    return InferenceSettings(model, chosen, rates, decoder, original)


def _apply(model: nn.Module, setting: Setting) -> nn.Module:
    """Give ``model`` the dtype and weight layout of ``setting``, in place."""
    if setting.dtype is not None:
        model.to(setting.dtype)
    if setting.transpose:
        transpose_weight_storage(model)
    return model
