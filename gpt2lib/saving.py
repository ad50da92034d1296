"""Save a fine-tuned model and load it back: ``model.safetensors`` + ``config.json``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import GPTConfig
from .files import FileFormatError, atomic_path, read_json
from .lora import LinearWithLoRA, apply_lora, lora_modules
from .model import GPTModel

FORMAT = "gpt2lib-model-1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def _head_info(model: GPTModel) -> dict[str, int] | None:
    """``None`` for the vocabulary head GPTModel builds, ``{"num_classes": K}`` otherwise."""
    head = model.lm_head
    linear = head.linear if isinstance(head, LinearWithLoRA) else head
    if not isinstance(linear, nn.Linear) or linear.in_features != model.cfg.emb_dim:
        raise ValueError(
            f"cannot save lm_head {type(linear).__name__}: expected an nn.Linear from emb_dim "
            f"({model.cfg.emb_dim})"
        )
    if linear.out_features == model.cfg.vocab_size and linear.bias is None:
        return None
    if linear.bias is None:
        raise ValueError("a classification head must have a bias (add_classification_head)")
    return {"num_classes": linear.out_features}


def _lora_info(model: GPTModel) -> dict[str, Any] | None:
    layers = list(lora_modules(model))
    if not layers:
        return None
    settings = {(m.lora.rank, m.lora.alpha) for _, m in layers}
    if len(settings) > 1:
        raise ValueError(
            f"LoRA layers with different (rank, alpha) {sorted(settings)}: save_model expects "
            "one apply_lora call"
        )
    ((rank, alpha),) = settings
    return {
        "rank": rank,
        "alpha": alpha,
        "targets": [name for name, _ in layers],
        "merged": [name for name, m in layers if m.merged],
    }


def _unique_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor (tied embeddings) once, under its first name."""
    seen: set[int] = set()
    tensors = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue  # rebuilt by the model's own constructor (e.g. lm_head tied to wte)
        seen.add(id(tensor))
        tensors[name] = tensor
    return tensors


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(
    model: GPTModel, directory: str | os.PathLike, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed).

    ``extra`` is stored as it is and must be JSON-serialisable. Returns ``directory``.
    """
    from safetensors.torch import save_file

    if not isinstance(model, GPTModel):
        raise TypeError(f"save_model saves a GPTModel, got {type(model).__name__}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
    save_id = uuid.uuid4().hex
    config = {
        "format": FORMAT,
        "save_id": save_id,
        "gpt_config": dataclasses.asdict(model.cfg),
        "head": _head_info(model),
        "lora": _lora_info(model),
        "extra": extra if extra is not None else {},
    }
    try:
        config_text = json.dumps(config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise TypeError(f"extra must be JSON-serialisable: {err}") from None
    tensors = {k: t.detach().cpu().contiguous() for k, t in _unique_tensors(model).items()}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "pt",
        "gpt2lib_save_id": save_id,
        "gpt2lib_config": json.dumps(config),
        "gpt2lib_tensors_sha256": tensors_sha256(tensors),
    }
    with atomic_path(directory / WEIGHTS_FILE) as tmp:  # weights first: see the module docstring
        save_file(tensors, str(tmp), metadata)
    with atomic_path(directory / CONFIG_FILE) as tmp:
        tmp.write_text(config_text, encoding="utf-8")
    return directory


def _weights_metadata(weights_path: Path) -> dict[str, str]:
    """The safetensors header metadata, or a FileFormatError naming the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own SafetensorError for any bad header
        raise FileFormatError(weights_path, f"not a readable safetensors file ({err})") from None


def _check_config(config: Any, path: Path) -> dict[str, Any]:
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise FileFormatError(path, f"not a gpt2lib model config (format {FORMAT!r} expected)")
    missing = [k for k in ("gpt_config", "head", "lora") if k not in config]
    if missing:
        raise FileFormatError(path, f"the model config lacks {missing}")
    lora = config["lora"]
    if lora is not None:
        if not isinstance(lora, dict):
            raise FileFormatError(path, f"'lora' must be null or an object, got {lora!r:.60}")
        absent = [k for k in ("rank", "alpha", "targets", "merged") if k not in lora]
        if absent:
            raise FileFormatError(path, f"the LoRA settings lack {absent}")
    head = config["head"]
    if head is not None and not (isinstance(head, dict) and "num_classes" in head):
        raise FileFormatError(
            path, f"'head' must be null or {{'num_classes': K}}, got {head!r:.60}"
        )
    if not isinstance(config["gpt_config"], dict):
        raise FileFormatError(path, "'gpt_config' must be an object")
    return config


def load_model_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The config of a :func:`save_model` directory (``["extra"]``: the caller's metadata).

    ``config.json`` when it belongs to the weights beside it (same ``save_id``); otherwise, after
    a save interrupted between its two renames, the copy inside ``model.safetensors``.
    """
    directory = Path(directory)
    path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    config = _check_config(read_json(path, "model config"), path) if path.is_file() else None
    embedded = None
    if weights_path.is_file():
        meta = _weights_metadata(weights_path)
        if "gpt2lib_config" in meta and (
            config is None or config.get("save_id") != meta.get("gpt2lib_save_id")
        ):
            try:
                embedded = json.loads(meta["gpt2lib_config"])
            except json.JSONDecodeError as err:
                raise FileFormatError(
                    weights_path, f"its embedded config is not JSON: {err}"
                ) from None
            embedded = _check_config(embedded, weights_path)
    if embedded is not None:
        return embedded
    if config is None:
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}: not a save_model directory")
    return config


def build_model(config: dict[str, Any]) -> GPTModel:
    """The module structure ``config`` (from :func:`load_model_config`) describes, with fresh
    weights: GPTModel, then the classification head, then LoRA (merged flags set)."""
    from .classifier import add_classification_head

    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(config["gpt_config"]) - fields)
    if unknown:
        raise ValueError(
            f"gpt_config has unknown field(s) {unknown}; GPTConfig has {sorted(fields)}"
        )
    model = GPTModel(GPTConfig(**config["gpt_config"]))
    if config["head"] is not None:
        add_classification_head(model, int(config["head"]["num_classes"]))
    lora = config["lora"]
    if lora is not None:
        targets = set(lora["targets"])
        wrapped = apply_lora(
            model, int(lora["rank"]), float(lora["alpha"]), targets=lambda n, _: n in targets
        )
        if set(wrapped) != targets:
            raise ValueError(f"LoRA targets {sorted(targets - set(wrapped))} are not in the model")
        for name in lora["merged"]:
            model.get_submodule(name).merged = True  # the saved weights hold the update already
    return model


def _few(names: list[str], limit: int = 6) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{names[:limit]}{more}"


def load_model(directory: str | os.PathLike, device: torch.device | str = "cpu") -> GPTModel:
    """Rebuild the model :func:`save_model` wrote into ``directory`` and load its weights.

    Returns it in eval mode on ``device``, every parameter trainable (freeze as needed). A
    checkpoint whose tensors do not fit the config raises a ``ValueError`` naming the tensor
    and both shapes; one whose bytes changed on disk fails its checksum.
    """
    from safetensors import safe_open

    directory = Path(directory)
    weights_path = directory / WEIGHTS_FILE
    config = load_model_config(directory)
    if not weights_path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {directory}")
    model = build_model(config)
    expected = _unique_tensors(model)
    meta = _weights_metadata(weights_path)
    if meta.get("gpt2lib_save_id") != config.get("save_id"):
        raise ValueError(
            f"{weights_path} and {CONFIG_FILE} come from different saves (interrupted "
            "save_model?); save the model again"
        )
    with safe_open(str(weights_path), framework="pt") as f:
        keys = set(f.keys())
        missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{weights_path} does not fit {CONFIG_FILE}: missing tensors {_few(missing)}, "
                f"unexpected tensors {_few(unexpected)}"
            )
        state = {}
        for name, target in expected.items():
            shape = tuple(f.get_slice(name).get_shape())
            if shape != tuple(target.shape):
                raise ValueError(
                    f"{weights_path}: tensor {name!r} has shape {shape} but the model built "
                    f"from {CONFIG_FILE} needs {tuple(target.shape)}"
                )
            state[name] = f.get_tensor(name)
    expected_sha = meta.get("gpt2lib_tensors_sha256")
    if expected_sha is not None and tensors_sha256(state) != expected_sha:
        raise FileFormatError(
            weights_path,
            "the tensors fail their checksum: the file changed on disk after it "
            "was saved (corrupt or edited); save the model again",
        )
    model.to(state["wte.weight"].dtype)  # e.g. a model saved in bfloat16 comes back in it
    model.load_state_dict(state, strict=False)  # tied tensors are filled through their twin
    return model.to(device).eval()
