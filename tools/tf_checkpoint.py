"""Writing checkpoints in the exact format of OpenAI's GPT-2 release (TensorFlow 1), for tests.

The book reads OpenAI's checkpoints (:mod:`gpt2lib.weights`); it never needs to write one. The
test mirror (:mod:`tools.mirror`) does: it serves the project's own models and
seeded random stand-ins at OpenAI's paths, so that the download and loading code runs on them
exactly as on GPT-2. TensorFlow is the writer, as the design names it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2lib.download import fetch
from gpt2lib.files import atomic_dir, sha256_file
from gpt2lib.model import GPTModel
from gpt2lib.weights import (
    DESCRIPTION_FILE,
    GPT2_VOCAB_SIZE,
    check_names,
    hparams_from_config,
    openai_params_from_gpt,
    openai_shapes,
)


def _copy_bpe_files(out: Path, encoder_files: bool | str | os.PathLike) -> None:
    from gpt2lib.tokenizer import BPE_FILES

    for url, sha256 in BPE_FILES.items():
        name = url.rsplit("/", 1)[1]
        if encoder_files is True:
            source = fetch(url, sha256=sha256)
        else:
            source = Path(encoder_files) / name
            if sha256_file(source) != sha256:
                raise ValueError(f"{source} is not GPT-2's {name} (sha256 differs)")
        shutil.copyfile(source, out / name)


def write_openai_checkpoint(
    model_or_params: GPTModel | Mapping[str, Any],
    ckpt_dir: str | os.PathLike,
    *,
    hparams: Mapping[str, int] | None = None,
    encoder_files: bool | str | os.PathLike = True,
    overwrite: bool = False,
    description: str | None = None,
) -> Path:
    """Write a checkpoint in the exact format of OpenAI's GPT-2 release; return ``ckpt_dir``.

    ``model.ckpt.{index,data-00000-of-00001,meta}`` (a TensorFlow 1 checkpoint with OpenAI's
    variable names, float32, conv1d weights ``[1, in, out]``), ``hparams.json``, ``checkpoint``
    and, unless ``encoder_files=False``, GPT-2's BPE files ``encoder.json`` and ``vocab.bpe``
    (fetched through :mod:`gpt2lib.download`, or copied from the directory ``encoder_files``
    names). A model must be GPT-2-shaped (vocabulary 50257, ``qkv_bias=True``, output head equal
    to ``wte``); a params dict needs ``hparams``. ``description`` (what the model is, in words)
    goes into ``gpt2lib.json`` beside the files, where :func:`gpt2lib.weights.describe_checkpoint`
    finds it. The directory appears complete or not at all.
    """
    if isinstance(model_or_params, GPTModel):
        params, hparams = (
            _params_of_model(model_or_params),
            hparams_from_config(model_or_params.cfg),
        )
    elif isinstance(model_or_params, Mapping):
        if hparams is None:
            raise TypeError("writing a params dict needs hparams= (n_head is not in the shapes)")
        params, hparams = _checked_params(model_or_params, hparams), dict(hparams)
    else:
        raise TypeError(f"expected a GPTModel or a params dict, got {type(model_or_params)}")
    ckpt_dir = Path(ckpt_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up messages
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    with atomic_dir(ckpt_dir, overwrite) as tmp:
        _save_tf1_checkpoint(tf, params, tmp / "model.ckpt")
        (tmp / "hparams.json").write_text(json.dumps(hparams, indent=2) + "\n")
        (tmp / "checkpoint").write_text(
            'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
        )
        if encoder_files is not False:
            _copy_bpe_files(tmp, encoder_files)
        if description is not None:
            about = {"description": description}
            (tmp / DESCRIPTION_FILE).write_text(json.dumps(about, indent=2) + "\n")
    return ckpt_dir


def _params_of_model(model: GPTModel) -> dict[str, np.ndarray]:
    cfg = model.cfg
    if cfg.vocab_size != GPT2_VOCAB_SIZE or not cfg.qkv_bias:
        raise ValueError(
            "OpenAI's format holds GPT-2-shaped models: vocab_size 50257 and qkv_bias=True; "
            f"got vocab_size={cfg.vocab_size}, qkv_bias={cfg.qkv_bias}"
        )
    if not cfg.tie_embeddings and not torch.equal(model.lm_head.weight, model.wte.weight):
        raise ValueError(
            "OpenAI's format stores only wte, which doubles as the output head; this model's "
            "lm_head differs from wte and would be lost (tie them, or export with export_hf)"
        )
    return openai_params_from_gpt(model)


def _checked_params(params: Mapping[str, Any], hparams: Mapping[str, int]) -> dict[str, np.ndarray]:
    if hparams.get("n_vocab") != GPT2_VOCAB_SIZE:
        raise ValueError(f"OpenAI's format needs n_vocab 50257, got {hparams.get('n_vocab')}")
    shapes = openai_shapes(hparams)
    check_names(set(params), set(shapes), "params", f" (hparams: {dict(hparams)})")
    out = {}
    for name, shape in shapes.items():
        out[name] = np.ascontiguousarray(np.asarray(params[name], dtype=np.float32))
        if out[name].shape != shape:
            raise ValueError(f"shape mismatch for {name}: got {out[name].shape}, expected {shape}")
    return out


def _save_tf1_checkpoint(tf: Any, params: dict[str, np.ndarray], prefix: Path) -> None:
    """Save ``params`` as TF1 ``VariableV2`` variables with a ``Saver`` (V2 format + meta graph)."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        feeds, variables = {}, {}
        for name, value in params.items():
            # initial values are fed, not baked into the graph: the .meta stays small
            placeholder = v1.placeholder(tf.float32, value.shape)
            variables[name] = v1.Variable(placeholder, name=name, use_resource=False)
            feeds[placeholder] = value
        saver = v1.train.Saver(var_list=variables, write_version=v1.train.SaverDef.V2)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer(), feed_dict=feeds)
            saver.save(sess, str(prefix), write_meta_graph=True, write_state=False)
