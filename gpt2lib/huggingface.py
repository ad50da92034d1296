"""Hugging Face's GPT-2 format, in and out of :class:`~gpt2lib.model.GPTModel`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .config import GPTConfig
from .download import fetch
from .files import atomic_dir, read_json
from .model import GPTModel
from .weights import CONV1D_KEYS, GPT2_VOCAB_SIZE, check_names, check_shape

HF_GPT2_SIZES = {"gpt2": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}
HF_URL = "https://huggingface.co/{repo}/resolve/main/{file}"
_HF_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")


def _is_conv1d(key: str) -> bool:
    """Whether our key ``key`` is one of the weights Hugging Face's ``Conv1D`` stores [in, out]."""
    return key.startswith("h.") and key.split(".", 2)[2] in CONV1D_KEYS


def load_hf_state_dict(model: GPTModel, state_dict: Mapping[str, Any]) -> GPTModel:
    """Copy a Hugging Face GPT-2 state dict into ``model``; return it.

    Accepts the keys of ``GPT2LMHeadModel`` (``transformer.h.0...``, ``lm_head.weight``) and of
    ``GPT2Model`` (``h.0...``). ``Conv1D`` weights (``[in, out]``) are transposed; the causal-mask
    buffers ``attn.bias``/``attn.masked_bias`` are skipped. Every other key must match: missing
    or unexpected keys and shape mismatches raise a ``ValueError`` naming them. Without
    ``lm_head.weight`` an untied head gets a copy of ``wte``; a tied model accepts it only if it
    equals ``wte``.
    """
    if not model.cfg.qkv_bias:
        raise ValueError("Hugging Face's GPT-2 has query/key/value biases: use qkv_bias=True")
    renamed = {}
    for hf_key, value in state_dict.items():
        key = hf_key.removeprefix("transformer.")
        if not _HF_MASK_BUFFER.fullmatch(key):
            renamed[key] = (hf_key, torch.as_tensor(value))
    lm_head = renamed.pop("lm_head.weight", None)
    expected = {k for k in model.state_dict() if k != "lm_head.weight"}
    check_names(set(renamed), expected, "state dict keys")
    state, tensors = model.state_dict(), {}
    for key, (hf_key, value) in renamed.items():  # check every shape before copying anything
        shape = tuple(state[key].shape)
        check_shape(hf_key, key, value, shape[::-1] if _is_conv1d(key) else shape)
        tensors[key] = value.T if _is_conv1d(key) else value  # Conv1D: [in, out] -> [out, in]
    if model.cfg.tie_embeddings:
        if lm_head is not None and not torch.equal(lm_head[1], tensors["wte.weight"]):
            raise ValueError("lm_head.weight differs from wte.weight but the model ties them")
    else:
        hf_key, value = lm_head if lm_head is not None else ("wte.weight", tensors["wte.weight"])
        check_shape(hf_key, "lm_head.weight", value, tuple(state["lm_head.weight"].shape))
        tensors["lm_head.weight"] = value
    with torch.no_grad():
        model.load_state_dict(tensors, strict=False)  # every key checked above; a tied head once
    return model


def config_from_hf(config: Mapping[str, Any]) -> GPTConfig:
    """The :class:`GPTConfig` of a Hugging Face GPT-2 ``config.json``."""
    if config.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"not a GPT-2 config: model_type={config.get('model_type')!r}")
    if config.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"unsupported activation {config['activation_function']!r}")
    if config.get("n_inner") not in (None, 4 * config["n_embd"]):
        raise ValueError(f"unsupported n_inner={config['n_inner']} (GPTModel uses 4 * n_embd)")
    return GPTConfig(
        vocab_size=config["vocab_size"],
        context_length=config["n_positions"],
        emb_dim=config["n_embd"],
        n_heads=config["n_head"],
        n_layers=config["n_layer"],
        drop_rate=config.get("resid_pdrop", 0.0),
        qkv_bias=True,
        tie_embeddings=config.get("tie_word_embeddings", True),
    )


def _hf_source(source: str | os.PathLike) -> tuple[Path, GPTConfig | None]:
    """Resolve a path or hub name to (safetensors file, config if known)."""
    name = str(source).removeprefix("openai-community/")
    if name in HF_GPT2_SIZES:
        url = HF_URL.format(repo=f"openai-community/{name}", file="model.safetensors")
        return fetch(url), GPTConfig.gpt2(HF_GPT2_SIZES[name], tie_embeddings=True)
    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.is_file():
        config = path.parent / "config.json"
        return path, config_from_hf(read_json(config, "config.json")) if config.is_file() else None
    if re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)):  # another hub repository, "owner/name"
        cfg_path = fetch(HF_URL.format(repo=source, file="config.json"))
        file = fetch(HF_URL.format(repo=source, file="model.safetensors"))
        return file, config_from_hf(read_json(cfg_path, "config.json"))
    raise ValueError(
        f"{str(source)!r} is neither a safetensors file, a directory holding one, nor a hub "
        f"repository; OpenAI's GPT-2 on the hub: {', '.join(HF_GPT2_SIZES)}"
    )


def load_hf_safetensors(source: str | os.PathLike, cfg: GPTConfig | None = None) -> GPTModel:
    """Load GPT-2 weights in Hugging Face's ``model.safetensors`` format; return the model in eval.

    ``source`` is a hub name (``"gpt2"``, ``"gpt2-medium"``, ``"gpt2-large"``, ``"gpt2-xl"``,
    optionally prefixed ``"openai-community/"``, fetched from
    ``https://huggingface.co/openai-community/<name>/resolve/main/model.safetensors`` through
    :mod:`gpt2lib.download`), another hub repository ``"owner/name"`` (with its ``config.json``),
    or a local file or directory (its ``config.json`` is read when present). ``cfg`` overrides
    the configuration found, and is required when none is.
    """
    from safetensors.torch import load_file

    path, found = _hf_source(source)
    cfg = cfg or found
    if cfg is None:
        raise ValueError(f"no config.json next to {path}: pass cfg=GPTConfig(...)")
    model = GPTModel(cfg)
    load_hf_state_dict(model, load_file(str(path)))
    return model.eval()


def export_hf(model: GPTModel, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for ``GPT2LMHeadModel.from_pretrained``.

    Keys are ``GPT2LMHeadModel``'s (``transformer.`` prefix, ``Conv1D`` weights ``[in, out]``);
    ``lm_head.weight`` is written only for an untied model. A model without query/key/value
    biases is exported with zero biases, which computes the same function.
    """
    from safetensors.torch import save_file

    cfg, state = model.cfg, model.state_dict()
    tensors = {}
    for key, value in state.items():
        if key == "lm_head.weight":
            continue
        value = value.T if _is_conv1d(key) else value
        tensors[f"transformer.{key}"] = value.detach().to("cpu", torch.float32).contiguous()
    for i in range(cfg.n_layers):
        tensors.setdefault(f"transformer.h.{i}.attn.c_attn.bias", torch.zeros(3 * cfg.emb_dim))
    if not cfg.tie_embeddings:
        tensors["lm_head.weight"] = state["lm_head.weight"].detach().to("cpu", torch.float32)
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "tie_word_embeddings": cfg.tie_embeddings,
        "torch_dtype": "float32",
    }
    if cfg.vocab_size == GPT2_VOCAB_SIZE:
        config.update(bos_token_id=GPT2_VOCAB_SIZE - 1, eos_token_id=GPT2_VOCAB_SIZE - 1)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return out_dir
