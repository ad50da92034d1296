"""Pretrained weights: OpenAI's GPT-2 checkpoints, downloaded and loaded into :class:`GPTModel`."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import GPT2_SIZES, GPTConfig
from .download import DownloadError, cache_dir, discard, download, is_cached
from .files import FileFormatError, read_json
from .model import GPTModel

GPT2_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models/{size}/{file}"
GPT2_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
GPT2_VOCAB_SIZE = 50257

# OpenAI's name inside "model/h{i}/" -> our state-dict key inside "h.{i}." ("g"/"b": LayerNorm
# gain and bias). Names ending in "/w" are conv1d weights, stored [1, in, out].
BLOCK_NAMES: dict[str, str] = {
    "ln_1/g": "ln_1.weight",
    "ln_1/b": "ln_1.bias",
    "attn/c_attn/w": "attn.c_attn.weight",  # query, key and value, fused: [1, C, 3C]
    "attn/c_attn/b": "attn.c_attn.bias",
    "attn/c_proj/w": "attn.c_proj.weight",
    "attn/c_proj/b": "attn.c_proj.bias",
    "ln_2/g": "ln_2.weight",
    "ln_2/b": "ln_2.bias",
    "mlp/c_fc/w": "mlp.c_fc.weight",
    "mlp/c_fc/b": "mlp.c_fc.bias",
    "mlp/c_proj/w": "mlp.c_proj.weight",
    "mlp/c_proj/b": "mlp.c_proj.bias",
}
TOP_NAMES: dict[str, str] = {
    "model/wte": "wte.weight",  # token embedding, also the output head (OpenAI ties them)
    "model/wpe": "wpe.weight",
    "model/ln_f/g": "ln_f.weight",
    "model/ln_f/b": "ln_f.bias",
}
# our keys (inside "h.{i}.") whose tensors are transposed between the two layouts
CONV1D_KEYS = tuple(key for name, key in BLOCK_NAMES.items() if name.endswith("/w"))


# --- names and shapes --------------------------------------------------------------------------


def openai_name_map(n_layer: int) -> dict[str, str]:
    """OpenAI variable name -> our state-dict key, for a model with ``n_layer`` blocks."""
    names = dict(TOP_NAMES)
    for i in range(n_layer):
        names.update({f"model/h{i}/{n}": f"h.{i}.{k}" for n, k in BLOCK_NAMES.items()})
    return names


def openai_shapes(hparams: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """The shape of every variable in an OpenAI checkpoint with these ``hparams.json`` values."""
    C, V, T = hparams["n_embd"], hparams["n_vocab"], hparams["n_ctx"]
    block = {
        "ln_1/g": (C,),
        "ln_1/b": (C,),
        "attn/c_attn/w": (1, C, 3 * C),
        "attn/c_attn/b": (3 * C,),
        "attn/c_proj/w": (1, C, C),
        "attn/c_proj/b": (C,),
        "ln_2/g": (C,),
        "ln_2/b": (C,),
        "mlp/c_fc/w": (1, C, 4 * C),
        "mlp/c_fc/b": (4 * C,),
        "mlp/c_proj/w": (1, 4 * C, C),
        "mlp/c_proj/b": (C,),
    }
    shapes = {"model/wte": (V, C), "model/wpe": (T, C), "model/ln_f/g": (C,), "model/ln_f/b": (C,)}
    for i in range(hparams["n_layer"]):
        shapes.update({f"model/h{i}/{n}": s for n, s in block.items()})
    return shapes


def _is_conv1d(key: str) -> bool:
    return key.startswith("h.") and key.split(".", 2)[2] in CONV1D_KEYS


def config_from_hparams(hparams: Mapping[str, int], **overrides: Any) -> GPTConfig:
    """The :class:`GPTConfig` of an OpenAI checkpoint (``qkv_bias=True``, tied embeddings).

    ``overrides`` may change what the checkpoint does not fix (``drop_rate``,
    ``tie_embeddings``); the shape fields come from ``hparams`` only.
    """
    missing = {"n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"} - set(hparams)
    if missing:
        raise ValueError(f"hparams lacks {sorted(missing)}; got {dict(hparams)}")
    fixed = {"vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "qkv_bias"}
    if fixed & set(overrides):
        raise ValueError(
            f"{sorted(fixed & set(overrides))} are fixed by the checkpoint's hparams.json "
            "and cannot be overridden"
        )
    cfg = GPTConfig(
        vocab_size=hparams["n_vocab"],
        context_length=hparams["n_ctx"],
        emb_dim=hparams["n_embd"],
        n_heads=hparams["n_head"],
        n_layers=hparams["n_layer"],
        qkv_bias=True,  # OpenAI's c_attn has biases
        tie_embeddings=True,  # the format stores only wte, which is also the output head
    )
    return dataclasses.replace(cfg, **overrides)


def hparams_from_config(cfg: GPTConfig) -> dict[str, int]:
    """``hparams.json`` for ``cfg``, with OpenAI's keys in OpenAI's order."""
    return {
        "n_vocab": cfg.vocab_size,
        "n_ctx": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers,
    }


# --- assigning tensors to a model ---------------------------------------------------------------


def check_shape(name: str, key: str, value: torch.Tensor, expected: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` has the ``expected`` shape and only finite numbers.

    ``expected`` is in the source's layout, so the message compares like with like.
    """
    if tuple(value.shape) != tuple(expected):
        raise ValueError(
            f"shape mismatch for {name} (our {key}): the weights have {tuple(value.shape)}, "
            f"the model expects {tuple(expected)}"
        )
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(
            f"{name} (our {key}) holds {bad:,} values that are NaN or infinite: a damaged "
            "checkpoint, or one saved after training diverged"
        )


def _assign(model: GPTModel, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` (our key -> tensor, shapes already checked) into ``model``."""
    state = model.state_dict()
    with torch.no_grad():
        for key, value in tensors.items():
            state[key].copy_(value)


def check_names(given: set[str], expected: set[str], source: str, hint: str = "") -> None:
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"missing {len(missing)}: {missing[:6]}{' ...' if len(missing) > 6 else ''}"
            )
        if unexpected:
            more = " ..." if len(unexpected) > 6 else ""
            parts.append(f"unexpected {len(unexpected)}: {unexpected[:6]}{more}")
        raise ValueError(f"{source} do not match the model ({'; '.join(parts)}){hint}")


def load_weights_into_gpt(model: GPTModel, params: Mapping[str, Any]) -> GPTModel:
    """Copy OpenAI-format ``params`` (``{"model/wte": array, ...}``) into ``model``; return it.

    Every variable is checked against the model's shape first (the error names the variable
    and both shapes). Conv1d weights ``[1, in, out]`` become ``nn.Linear`` weights ``w[0].T``.
    If the model's output head is untied, it gets a copy of ``wte``, as OpenAI's GPT-2 uses the
    token embedding as its output layer.
    """
    if not model.cfg.qkv_bias:
        raise ValueError(
            "OpenAI's checkpoints carry query/key/value biases; build the model with "
            "GPTConfig(qkv_bias=True)"
        )
    name_map = openai_name_map(model.cfg.n_layers)
    hint = f" (the model has {model.cfg.n_layers} layers)"
    check_names(set(params), set(name_map), "checkpoint variables", hint)
    state, tensors = model.state_dict(), {}
    for name, key in name_map.items():  # check every shape before copying anything
        value = torch.as_tensor(np.asarray(params[name]), dtype=torch.float32)
        shape = tuple(state[key].shape)
        check_shape(name, key, value, (1, *shape[::-1]) if _is_conv1d(key) else shape)
        tensors[key] = value[0].T if _is_conv1d(key) else value  # [1, in, out] -> [out, in]
    if not model.cfg.tie_embeddings:
        tensors["lm_head.weight"] = tensors["wte.weight"]
    _assign(model, tensors)
    return model


def openai_params_from_gpt(model: GPTModel) -> dict[str, np.ndarray]:
    """The inverse of :func:`load_weights_into_gpt`: ``{openai_name: float32 array}``."""
    state = model.state_dict()
    params = {}
    for name, key in openai_name_map(model.cfg.n_layers).items():
        value = state[key].detach().to("cpu", torch.float32)
        if _is_conv1d(key):
            value = value.T[None]  # [out, in] -> [1, in, out]
        params[name] = np.ascontiguousarray(value.numpy())
    return params


# --- OpenAI's release ---------------------------------------------------------------------------


def _check_size_name(size: str) -> None:
    if not isinstance(size, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", size):
        raise ValueError(
            f"invalid model name {size!r}: expected a size such as "
            f"{', '.join(map(repr, GPT2_SIZES))} or a mirror's own name like 'stand-in-tiny' "
            "(letters, digits, '.', '_', '-'; no slashes)"
        )


def download_gpt2(
    size: str, models_dir: str | os.PathLike | None = None, *, refresh: bool = False
) -> Path:
    """Fetch the seven files of OpenAI's ``size`` release into ``models_dir/size``; return it.

    ``size`` is one of OpenAI's ``"124M"``, ``"355M"``, ``"774M"``, ``"1558M"``, or a name a
    mirror serves in the same layout (e.g. ``"stand-in-tiny"``, a random stand-in, not GPT-2).
    ``models_dir`` defaults to ``cache_dir() / "models"``. A file already there is kept only if
    the download layer recorded it as complete (:func:`gpt2lib.download.is_cached`: its size);
    ``refresh=True`` fetches every file again.
    """
    _check_size_name(size)
    target = Path(models_dir) if models_dir is not None else cache_dir() / "models"
    target = target / size
    for file in GPT2_FILES:
        dest = target / file
        if refresh or not is_cached(dest):
            discard(dest)
            download(GPT2_URL.format(size=size, file=file), dest)
    return target


def _import_tensorflow() -> Any:
    # quiet TensorFlow's C++ start-up messages (oneDNN notice, log banners) unless the user chose
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    return tf


HPARAMS_KEYS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")


def _read_hparams(ckpt_dir: Path) -> dict[str, int]:
    path = ckpt_dir / "hparams.json"
    if not path.is_file():
        raise FileNotFoundError(f"no hparams.json in {ckpt_dir}: not an OpenAI GPT-2 checkpoint")
    hparams = read_json(path, "hparams.json")
    if not isinstance(hparams, dict):
        raise FileFormatError(path, f"expected a JSON object, got {type(hparams).__name__}")
    bad = [k for k in HPARAMS_KEYS if type(hparams.get(k)) is not int or hparams[k] <= 0]
    if bad:
        raise FileFormatError(path, f"{bad} must be positive integers; got {hparams}")
    return hparams


def _checkpoint_prefix(ckpt_dir: Path) -> str:
    """The checkpoint's path prefix: what the ``checkpoint`` file names, else ``model.ckpt``."""
    candidates = []
    state = ckpt_dir / "checkpoint"
    if state.is_file():
        found = re.search(
            r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(errors="replace"), re.M
        )
        if found:
            candidates.append(str(ckpt_dir / found.group(1)))  # relative to the folder
    candidates.append(str(ckpt_dir / "model.ckpt"))
    prefix = next((c for c in candidates if Path(c + ".index").is_file()), None)
    if prefix is None:
        raise FileNotFoundError(f"no TensorFlow checkpoint (model.ckpt.index) in {ckpt_dir}")
    return prefix


def _check_data_size(prefix: str, variables: list[tuple[str, list[int]]]) -> None:
    """A data file shorter than its index's float32 tensors is truncated: say so, naming it."""
    data = sorted(Path(prefix).parent.glob(Path(prefix).name + ".data-*"))
    needed = 4 * sum(math.prod(shape) for _, shape in variables)  # float32 tensors
    have = sum(f.stat().st_size for f in data)
    if have < needed:
        where = data[0] if len(data) == 1 else Path(prefix + ".data-*")
        raise FileFormatError(
            where, f"truncated: {have:,} bytes, but its index lists {needed:,} bytes of tensors"
        )


def load_openai_checkpoint(ckpt_dir: str | os.PathLike) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Read ``hparams.json`` and the TensorFlow checkpoint in ``ckpt_dir`` with TensorFlow.

    Returns ``(hparams, params)``; ``params`` is flat, ``{openai_name: float32 array}``, each
    array in the checkpoint's own shape (e.g. ``"model/h0/attn/c_attn/w"``: ``(1, C, 3C)``). A
    damaged file raises :class:`~gpt2lib.files.FileFormatError` naming it (and the tensor): a
    truncated data file is caught before any tensor is read.
    """
    ckpt_dir = Path(ckpt_dir)
    hparams = _read_hparams(ckpt_dir)
    prefix = _checkpoint_prefix(ckpt_dir)
    tf = _import_tensorflow()
    try:
        variables = tf.train.list_variables(prefix)
    except Exception as err:  # TensorFlow raises its own errors for a bad index
        raise FileFormatError(prefix + ".index", f"not a readable checkpoint index ({err})") from None
    _check_data_size(prefix, variables)
    params = {}
    for name, _ in variables:
        try:  # TensorFlow checks each tensor's crc32c as it reads it
            params[name] = np.asarray(tf.train.load_variable(prefix, name), dtype=np.float32)
        except Exception as err:
            raise FileFormatError(prefix, f"cannot read tensor {name!r} ({err})") from None
    return hparams, params


def model_from_openai_checkpoint(
    ckpt_dir: str | os.PathLike, *, tie_embeddings: bool = True, **overrides: Any
) -> GPTModel:
    """Build the model ``ckpt_dir/hparams.json`` describes, load its weights, return it in eval mode.

    ``tie_embeddings=False`` gives the model a separate output head initialised with a copy of
    ``wte`` (as the book does); ``overrides`` (e.g. ``drop_rate=0.1``) go to the config.
    """
    hparams, params = load_openai_checkpoint(ckpt_dir)
    cfg = config_from_hparams(hparams, tie_embeddings=tie_embeddings, **overrides)
    model = GPTModel(cfg)
    load_weights_into_gpt(model, params)
    return model.eval()


DESCRIPTION_FILE = "gpt2lib.json"  # beside a checkpoint that is not OpenAI's: what it is


def describe_checkpoint(name: str, models_dir: str | os.PathLike | None = None) -> str:
    """What the checkpoint called ``name`` is, in words: OpenAI's GPT-2, or a model of ours.

    A checkpoint that is not one of OpenAI's releases says what it is in a small JSON file
    beside it, ``gpt2lib.json`` (``{"description": ...}``), fetched with it; the description
    travels with the checkpoint, so loading needs no registry of models. Where there is none
    (the server answers 404), a checkpoint named like one of OpenAI's sizes is OpenAI's release;
    any other is a checkpoint in OpenAI's layout of unknown origin. (The rehearsal's mirror
    serves random stand-ins under OpenAI's size names, each with its description.)
    """
    _check_size_name(name)
    target = Path(models_dir) if models_dir is not None else cache_dir() / "models"
    path = target / name / DESCRIPTION_FILE
    if not is_cached(path):
        try:
            download(GPT2_URL.format(size=name, file=DESCRIPTION_FILE), path, progress=False)
        except DownloadError as err:
            if err.status != 404:
                raise
            if name in GPT2_SIZES:
                return f"OpenAI's GPT-2 {name} (the released weights)"
            return f"{name}: a checkpoint in OpenAI's layout, not one of OpenAI's GPT-2 releases"
    about = read_json(path, DESCRIPTION_FILE)
    if not isinstance(about, dict) or not isinstance(about.get("description"), str):
        raise FileFormatError(path, 'expected {"description": "..."}')
    return about["description"]


PACKAGED = ("mini-shakespeare",)  # the project's own models, shipped in gpt2lib/pretrained/


@dataclasses.dataclass(frozen=True)
class PretrainedInfo:
    """Where a loaded checkpoint came from: printed by every chapter that loads a model."""

    name: str
    description: str
    source: str  # the canonical URL of the checkpoint's folder, or where in the package it is
    n_params: int
    mirrored: bool = False  # fetched from a local mirror of ``source``, not from it

    def __str__(self) -> str:
        lines = [f"checkpoint: {self.description}", f"parameters: {self.n_params:,}"]
        lines.append(f"from:       {self.source}")
        if self.mirrored:
            lines.append("served by:  the local mirror of that URL (no internet here)")
        return "\n".join(lines)


def load_pretrained(
    name: str, models_dir: str | os.PathLike | None = None, **kwargs: Any
) -> tuple[GPTModel, PretrainedInfo]:
    """Load the pretrained checkpoint ``name``: ``(model, info)``.

    OpenAI's GPT-2 (``"124M"``, ...) is downloaded in OpenAI's format and read by
    :func:`model_from_openai_checkpoint`. The project's own models (:data:`PACKAGED`, such as
    ``"mini-shakespeare"``) ship inside the package and load from there, never from under
    OpenAI's host, through OpenAI's variable names, so that both come out alike. ``kwargs`` go
    to the configuration as for :func:`model_from_openai_checkpoint` (``tie_embeddings=False``,
    ``drop_rate=0.1``).
    """
    if name in PACKAGED:
        return _load_packaged(name, **kwargs)
    from .download import mirror_url

    try:
        model = model_from_openai_checkpoint(download_gpt2(name, models_dir), **kwargs)
    except FileFormatError:  # a cached file was damaged: fetch every file again, once
        model = model_from_openai_checkpoint(
            download_gpt2(name, models_dir, refresh=True), **kwargs
        )
    url = GPT2_URL.format(size=name, file="")
    n_params = sum(p.numel() for p in model.parameters())
    description = describe_checkpoint(name, models_dir)
    return model, PretrainedInfo(name, description, url, n_params, mirror_url(url) != url)


def _load_packaged(
    name: str, *, tie_embeddings: bool = True, **overrides: Any
) -> tuple[GPTModel, PretrainedInfo]:
    """A model of :data:`PACKAGED`, built as :func:`model_from_openai_checkpoint` builds one."""
    from .mini import PRETRAINED_DIR, load_mini, read_manifest

    saved = load_mini(PRETRAINED_DIR / name)
    cfg = config_from_hparams(
        hparams_from_config(saved.cfg), tie_embeddings=tie_embeddings, **overrides
    )
    model = load_weights_into_gpt(GPTModel(cfg), openai_params_from_gpt(saved)).eval()
    n_params = sum(p.numel() for p in model.parameters())
    description = f"{name}: {read_manifest(PRETRAINED_DIR / name)['description']}"
    source = f"the gpt2lib package, gpt2lib/pretrained/{name}/ (the project's own model)"
    return model, PretrainedInfo(name, description, source, n_params)
