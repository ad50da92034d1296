"""What a training run records at each evaluation (:class:`History`, ready for plots and JSON)
and where it stands (:class:`RunState`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class History:
    """What :func:`train` records at each evaluation, ready for plots and JSON.

    ``train_loss`` and ``val_loss`` are eval-mode losses on the first ``eval_batches`` batches
    of each loader (``nan`` without a validation loader); ``lr`` is the learning rate of the
    step just taken (of the first step at step 0); ``metrics`` holds ``eval_fn``'s values as
    ``train_<name>`` and ``val_<name>``.
    """

    steps: list[int] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    examples_seen: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and dicts; ``nan`` becomes ``None`` so the result is strict JSON."""
        d = asdict(self)
        d["train_loss"] = [_nan_to_none(v) for v in self.train_loss]
        d["val_loss"] = [_nan_to_none(v) for v in self.val_loss]
        d["metrics"] = {k: [_nan_to_none(v) for v in vs] for k, vs in self.metrics.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        def floats(values: list[float | None]) -> list[float]:
            return [float("nan") if v is None else float(v) for v in values]

        return cls(
            steps=[int(s) for s in d["steps"]],
            tokens_seen=[int(t) for t in d["tokens_seen"]],
            examples_seen=[int(e) for e in d.get("examples_seen", [])],
            train_loss=floats(d["train_loss"]),
            val_loss=floats(d["val_loss"]),
            lr=floats(d["lr"]),
            metrics={k: floats(v) for k, v in d.get("metrics", {}).items()},
        )


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass
class RunState:
    """Where a training run stands: the steps taken, the position in the data (epoch, and the
    batches of it already used), the totals seen over all processes, and the history."""

    step: int = 0
    history: History = field(default_factory=History)
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0
    examples_seen: int = 0
