"""Timing code fairly: warm-up, interleaved repetitions, the median. The one harness for the
library's measured choices (:func:`gpt2lib.fast.optimize_for_inference`) and the benchmark
suite (``benchmarks/``).

Every comparison times its contenders *interleaved*: after a warm-up of each, repetition ``r``
runs all of them once, in an order rotated by ``r``. On a machine shared with other work, a
slow patch then hits every contender alike, and the median of each is what counts. On CUDA the
clock stops only after the device has finished (:func:`synchronize`), as nanoGPT's ``bench.py``
does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on ``device`` (a no-op except on CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Wall-clock seconds of each repetition; ``work`` units (tokens) done per call."""

    times: list[float] = field(default_factory=list)
    work: float = 1.0

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def rate(self) -> float:
        """Work per second at the median time."""
        return self.work / self.median

    def as_dict(self) -> dict[str, object]:
        return {"median_s": self.median, "per_s": self.rate, "work": self.work, "times": self.times}


def time_interleaved(
    cases: dict[str, Callable[[], object]],
    work: dict[str, float],
    reps: int,
    device: torch.device | str,
    warmups: dict[str, Callable[[], object]] | None = None,
    reps_of: dict[str, int] | None = None,
) -> dict[str, Timing]:
    """Warm up each case (with ``warmups[name]`` if given), then time ``reps`` rounds.

    ``reps_of`` lowers the repetitions of a slow case (it then sits out the later rounds).
    """
    warmups = warmups or {}
    reps_of = reps_of or {}
    for name, fn in cases.items():
        warmups.get(name, fn)()
    synchronize(device)
    results = {name: Timing(work=work[name]) for name in cases}
    names = list(cases)
    for r in range(reps):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            if r >= reps_of.get(name, reps):
                continue
            start = time.perf_counter()
            cases[name]()
            synchronize(device)
            results[name].times.append(time.perf_counter() - start)
    return results
