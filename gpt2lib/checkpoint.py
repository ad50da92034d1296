"""A training run's record and state (:class:`History`, :class:`RunState`), and its checkpoints."""

from __future__ import annotations

import math
import os
import pickle
import random
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import FileFormatError, atomic_path

FORMAT = "gpt2lib-checkpoint-1"


@dataclass
class History:
    """What :func:`~gpt2lib.train.train` records at each evaluation, ready for plots and JSON.

    ``train_loss`` and ``val_loss``: eval-mode losses on the first ``eval_batches`` batches of
    each loader (``nan`` without a validation loader); ``lr``: the rate of the step just taken;
    ``metrics``: ``eval_fn``'s values as ``train_<name>`` and ``val_<name>``.
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

        def strict(values: list[float]) -> list[float | None]:
            return [None if math.isnan(v) else v for v in values]

        d = asdict(self)
        d["train_loss"], d["val_loss"] = strict(self.train_loss), strict(self.val_loss)
        d["metrics"] = {k: strict(vs) for k, vs in self.metrics.items()}
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


@dataclass
class RunState:
    """Where a run stands: steps taken, the position in the data (epoch, and the batches of it
    already used), the totals seen over all processes, and the history."""

    step: int = 0
    history: History = field(default_factory=History)
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0
    examples_seen: int = 0


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns besides the weights and optimizer state it loads."""

    state: RunState
    rng_states: list[dict[str, Any]] = field(default_factory=list)  # one per process
    train_config: dict[str, Any] | None = None  # the training settings, as plain data
    model_config: dict[str, Any] | None = None
    data_layout: dict[str, int] | None = None  # batch size, batches per epoch, processes


def rng_state() -> dict[str, Any]:
    """The random state of this process: Python's and PyTorch's (CPU, and CUDA if present)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""

    def tuples(obj: Any) -> Any:  # a saved list stands for Python's tuples
        return tuple(tuples(x) for x in obj) if isinstance(obj, (list, tuple)) else obj

    random.setstate(tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    state: RunState | None = None,
    *,
    rng_states: list[dict[str, Any]] | None = None,
    train_config: Any = None,
    data_layout: dict[str, int] | None = None,
) -> Path:
    """Write model, optimizer, run state and random state to ``path``, atomically: a crash
    leaves the previous checkpoint or the new one. ``train_config`` (a dataclass) is stored as
    plain data; ``data_layout`` records how the data was batched, for a resumed run to check."""
    if train_config is not None and not is_dataclass(train_config):
        raise TypeError(f"train_config must be a dataclass, got {type(train_config).__name__}")
    raw, state = unwrap(model), state or RunState()
    model_cfg = getattr(raw, "cfg", None)
    payload = {
        "format": FORMAT,
        "model": raw.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        **{k: v for k, v in asdict(state).items() if k != "history"},
        "history": state.history.to_dict(),
        "rng_states": rng_states if rng_states is not None else [rng_state()],
        "train_config": asdict(train_config) if train_config is not None else None,
        "model_config": asdict(model_cfg) if is_dataclass(model_cfg) else None,
        "data_layout": data_layout,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint_file(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The payload of a checkpoint file, or a FileFormatError that names the file."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError,
            zipfile.BadZipFile, UnicodeDecodeError, OSError) as err:  # fmt: skip
        # torch's own message may suggest weights_only=False, which is never the fix here
        raise FileFormatError(
            path, f"not a readable gpt2lib training checkpoint (truncated, or another kind of "
            f"file: {type(err).__name__})",
        ) from None  # fmt: skip
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise FileFormatError(path, "not a gpt2lib training checkpoint")
    return payload


def differences(saved: dict[str, Any], current: dict[str, Any], skip: Iterable[str] = ()) -> list[str]:
    """``"name: ... in the checkpoint, ... now"`` for each field that differs (tuples equal
    lists), leaving out ``skip``."""

    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, (tuple, list)) else v

    names = sorted((set(saved) | set(current)) - set(skip))
    return [f"{n}: {saved.get(n)!r} in the checkpoint, {current.get(n)!r} now"
            for n in names if norm(saved.get(n)) != norm(current.get(n))]  # fmt: skip


def _check_fits(path: Path, payload: dict[str, Any], model: nn.Module,
                optimizer: torch.optim.Optimizer | None) -> None:  # fmt: skip
    """Raise ValueError unless the model's configuration and tensors, and the optimizer's
    groups and state shapes, are those of the checkpoint."""
    model_cfg = getattr(unwrap(model), "cfg", None)
    if payload.get("model_config") is not None and is_dataclass(model_cfg):
        diffs = differences(payload["model_config"], asdict(model_cfg), skip=("drop_rate",))
        if diffs:
            raise ValueError(f"checkpoint {path} does not fit this model, saved with another "
                             f"configuration: {'; '.join(diffs)}")  # fmt: skip
    own, saved = unwrap(model).state_dict(), payload["model"]
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    shapes = [f"{k} {tuple(saved[k].shape)} vs {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(saved)) if saved[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        raise ValueError(
            f"checkpoint {path} does not fit this model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatches (checkpoint vs model) {shapes[:5]}"
        )
    if optimizer is None:
        return
    if payload["optimizer"] is None:
        raise ValueError(f"checkpoint {path} holds no optimizer state")
    groups = payload["optimizer"].get("param_groups", [])
    sizes = [len(g["params"]) for g in groups]
    if sizes != [len(g["params"]) for g in optimizer.param_groups]:
        raise ValueError(
            f"checkpoint {path}: its optimizer has parameter groups of sizes {sizes}, this "
            f"optimizer {[len(g['params']) for g in optimizer.param_groups]} (other trainable "
            "parameters?)"
        )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for index, param in zip([i for g in groups for i in g["params"]], params, strict=True):
        for key, value in payload["optimizer"].get("state", {}).get(index, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise ValueError(
                    f"checkpoint {path}: optimizer state {key!r} of parameter {index} has shape "
                    f"{tuple(value.shape)}, the parameter {tuple(param.shape)}"
                )


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Load a :func:`save_checkpoint` file into ``model`` (and ``optimizer``); return the rest.

    Everything is checked first, so a failed load leaves model and optimizer as they were: a
    file that is not a checkpoint raises :class:`~gpt2lib.files.FileFormatError`; one of
    another model configuration (even with equal shapes), other tensors or optimizer state of
    other shapes raises a ``ValueError`` naming the file and each difference.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return load_payload(path, read_checkpoint_file(path, map_location), model, optimizer)


def load_payload(path: Path, payload: dict[str, Any], model: nn.Module,
                 optimizer: torch.optim.Optimizer | None) -> Checkpoint:  # fmt: skip
    """:func:`load_checkpoint` once the file is read: check everything, then assign."""
    _check_fits(path, payload, model, optimizer)
    unwrap(model).load_state_dict(payload["model"])
    if optimizer is not None:
        optimizer.load_state_dict(payload["optimizer"])
    position = {k: payload.get(k, 0) for k in ("step", "epoch", "batch_in_epoch", "tokens_seen",
                                               "examples_seen")}  # fmt: skip
    return Checkpoint(
        RunState(history=History.from_dict(payload["history"]), **position),
        payload["rng_states"], payload["train_config"], payload["model_config"],
        payload.get("data_layout"),
    )  # fmt: skip
