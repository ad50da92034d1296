"""Memory and FLOP helpers for the benchmark suite (see ``benchmarks/run.py``).

Timing is the library's own harness, :mod:`gpt2lib.timing` (warm-up, interleaved repetitions,
the median), the one :func:`gpt2lib.fast.optimize_for_inference` measures with too.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections.abc import Callable

import psutil
import torch

from benchmarks.timing import time_interleaved
from gpt2lib.config import GPTConfig


def _release_free_memory() -> None:
    """Collect garbage and hand free heap pages back to the OS, so RSS shows live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS may then include freed memory
        pass


class _RSSSampler(threading.Thread):
    def __init__(self, interval: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak = interval, 0
        self.process = psutil.Process()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self.process.memory_info().rss)


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes by which ``fn()`` raises peak memory above what is live before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's resident set size sampled
    every millisecond in a thread, after free heap pages are returned to the OS.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    _release_free_memory()
    before = psutil.Process().memory_info().rss
    sampler = _RSSSampler()
    sampler.start()
    fn()
    return sampler.stop() - before


def forward_flops(cfg: GPTConfig, batch: int, seq: int) -> float:
    """FLOPs of one forward pass over (batch, seq) tokens, counting matrix multiplications.

    Per token and layer: 24 C^2 for the four linear layers (q/k/v, attention output, MLP up and
    down, 2 FLOPs per multiply-add) and 4 C t for the scores and the weighted sum at position t
    (causal: t averages (seq + 1) / 2); plus 2 C V for the output head.
    """
    C, L, V = cfg.emb_dim, cfg.n_layers, cfg.vocab_size
    per_token = L * (24 * C * C + 4 * C * (seq + 1) / 2) + 2 * C * V
    return batch * seq * per_token


def matmul_peak(dtype: torch.dtype, device: torch.device, reps: int, size: int = 2048) -> float:
    """Best GFLOP/s of ``torch.mm`` over a square and a model-like shape (median of ``reps``)."""
    shapes = [(size, size, size), (size, 768, 3072)]  # (M, K, N)
    best = 0.0
    for M, K, N in shapes:
        a = torch.randn(M, K, device=device, dtype=dtype)
        b = torch.randn(K, N, device=device, dtype=dtype)
        t = time_interleaved({"mm": lambda a=a, b=b: a @ b}, {"mm": 2.0 * M * K * N}, reps, device)
        best = max(best, t["mm"].rate / 1e9)
    return best
