"""Training checkpoints: save and load a run, its random state, and check what is resumed.

A checkpoint holds the weights, the optimizer, where the run stands (a
:class:`~gpt2lib.history.RunState`: step, history, position in the data), every process's
random state (dropout), and the settings and data layout that define the run, so that
:func:`gpt2lib.train.train` resumes a run exactly (it compares those settings before it
resumes). Saving is atomic (:func:`gpt2lib.files.atomic_path`). Loading checks everything before
it assigns anything: the model configuration, the tensors, the optimizer state.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import FileFormatError, atomic_path
from .history import History, RunState


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns besides the weights and optimizer state it loads."""

    state: RunState  # where the saved run stood
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
    random.setstate(_as_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(obj: Any) -> Any:
    return tuple(_as_tuples(x) for x in obj) if isinstance(obj, (list, tuple)) else obj


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
    """Write model + optimizer + run state (step, history, data position) + random state to
    ``path``.

    Atomic (:func:`gpt2lib.files.atomic_path`): a crash leaves the previous checkpoint or the
    new one, never half of one, and the temporary a killed process left is removed by the next
    save. ``state`` defaults to a run at step 0; ``rng_states`` to this process's random state;
    ``train_config`` (a dataclass such as :class:`~gpt2lib.train.TrainConfig`) is stored as
    plain data; ``data_layout`` records how the data was batched, so that a resumed run can
    check it is batched the same way.
    """
    if train_config is not None and not is_dataclass(train_config):
        raise TypeError(f"train_config must be a dataclass, got {type(train_config).__name__}")
    raw = unwrap(model)
    model_cfg = getattr(raw, "cfg", None)
    state = state or RunState()
    payload = {
        "format": "gpt2lib-checkpoint-1",
        "model": raw.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": state.step,
        "epoch": state.epoch,
        "batch_in_epoch": state.batch_in_epoch,
        "tokens_seen": state.tokens_seen,
        "examples_seen": state.examples_seen,
        "history": state.history.to_dict(),
        "rng_states": rng_states if rng_states is not None else [rng_state()],
        "train_config": asdict(train_config) if train_config is not None else None,
        "model_config": asdict(model_cfg) if hasattr(model_cfg, "__dataclass_fields__") else None,
        "data_layout": data_layout,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint_file(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The payload of a checkpoint file, or a FileFormatError that names the file."""
    import pickle
    import zipfile

    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError,
            zipfile.BadZipFile, UnicodeDecodeError, OSError) as err:  # fmt: skip
        # torch's own message may suggest weights_only=False, which is never the fix here
        raise FileFormatError(
            path,
            f"not a readable gpt2lib training checkpoint (truncated, or another kind of "
            f"file: {type(err).__name__})",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != "gpt2lib-checkpoint-1":
        raise FileFormatError(path, "not a gpt2lib training checkpoint")
    return payload


def differences(
    saved: dict[str, Any], current: dict[str, Any], skip: Iterable[str] = ()
) -> list[str]:
    """``"name: ... in the checkpoint, ... now"`` for each field that differs (tuples equal
    lists), leaving out ``skip``."""

    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, (tuple, list)) else v

    names = sorted((set(saved) | set(current)) - set(skip))
    return [
        f"{n}: {saved.get(n)!r} in the checkpoint, {current.get(n)!r} now"
        for n in names
        if norm(saved.get(n)) != norm(current.get(n))
    ]


def _check_state_dict(path: Path, model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Raise ValueError unless ``saved`` has exactly the model's tensors, shape for shape."""
    own = unwrap(model).state_dict()
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(saved))
        if tuple(saved[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"checkpoint {path} does not fit this model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatches (checkpoint vs model) {shapes[:5]}"
        )


def _check_optimizer_state(path: Path, optimizer: torch.optim.Optimizer, saved: Any) -> None:
    """Raise ValueError unless ``saved`` fits ``optimizer``: groups, sizes and state shapes."""
    if saved is None:
        raise ValueError(f"checkpoint {path} holds no optimizer state")
    groups, own = saved.get("param_groups", []), optimizer.param_groups
    sizes, own_sizes = [len(g["params"]) for g in groups], [len(g["params"]) for g in own]
    if sizes != own_sizes:
        raise ValueError(
            f"checkpoint {path}: its optimizer has parameter groups of sizes {sizes}, this "
            f"optimizer {own_sizes} (other trainable parameters?)"
        )
    params = [p for g in own for p in g["params"]]
    ids = [i for g in groups for i in g["params"]]
    for index, param in zip(ids, params, strict=True):
        for key, value in saved.get("state", {}).get(index, {}).items():
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

    Everything is checked before anything is assigned, so a failed load leaves the model and
    the optimizer as they were: a file that is not a checkpoint raises
    :class:`~gpt2lib.files.FileFormatError`; a checkpoint saved from another model
    configuration (e.g. other ``n_heads`` or ``tie_embeddings``, even with equal shapes), with
    other tensors, or with optimizer state of other shapes raises a ``ValueError`` naming the
    file and each difference.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return load_payload(path, read_checkpoint_file(path, map_location), model, optimizer)


def load_payload(
    path: Path, payload: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> Checkpoint:
    """:func:`load_checkpoint` once the file is read: check everything, then assign."""
    model_cfg = getattr(unwrap(model), "cfg", None)
    if payload.get("model_config") is not None and hasattr(model_cfg, "__dataclass_fields__"):
        diffs = differences(payload["model_config"], asdict(model_cfg), skip=("drop_rate",))
        if diffs:
            raise ValueError(
                f"checkpoint {path} does not fit this model, saved with another configuration: "
                + "; ".join(diffs)
            )
    _check_state_dict(path, model, payload["model"])
    if optimizer is not None:
        _check_optimizer_state(path, optimizer, payload["optimizer"])
    unwrap(model).load_state_dict(payload["model"])
    if optimizer is not None:
        optimizer.load_state_dict(payload["optimizer"])
    state = RunState(
        step=payload["step"],
        history=History.from_dict(payload["history"]),
        epoch=payload["epoch"],
        batch_in_epoch=payload["batch_in_epoch"],
        tokens_seen=payload.get("tokens_seen", 0),
        examples_seen=payload.get("examples_seen", 0),
    )
    return Checkpoint(
        state=state,
        rng_states=payload["rng_states"],
        train_config=payload["train_config"],
        model_config=payload["model_config"],
        data_layout=payload.get("data_layout"),
    )
