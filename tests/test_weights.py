"""Tests for gpt2lib.weights: OpenAI's checkpoint format.

TensorFlow takes seconds to import, so the tests that need them share
module-scoped fixtures.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt2lib.config import GPTConfig
from gpt2lib.model import GPTModel
from gpt2lib.tokenizer import BPE_FILES
from gpt2lib.weights import (
    CONV1D_KEYS,
    config_from_hparams,
    download_gpt2,
    hparams_from_config,
    load_openai_checkpoint,
    load_weights_into_gpt,
    model_from_openai_checkpoint,
    openai_name_map,
    openai_params_from_gpt,
    openai_shapes,
)
from tools.offline import shared_assets
from tools.tf_checkpoint import write_openai_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHARED = shared_assets()
REFERENCE = SHARED / "reference" / "openai-gpt2-124M"
MIRROR = SHARED / "mirror"
TINY = GPTConfig.tiny()
# GPT-2-shaped (OpenAI's format needs GPT-2's vocabulary), otherwise as small as possible
TINY_GPT2 = GPTConfig(context_length=24, emb_dim=16, n_heads=2, n_layers=2, tie_embeddings=True)


def random_model(cfg: GPTConfig, seed: int = 0) -> GPTModel:
    """A model whose every parameter (biases and LayerNorms too) is random, so no slip hides."""
    torch.manual_seed(seed)
    model = GPTModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def logits(model: torch.nn.Module, cfg: GPTConfig, seed: int = 1) -> torch.Tensor:
    idx = torch.randint(
        0, cfg.vocab_size, (2, cfg.context_length), generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        out = model(idx)
    return getattr(out, "logits", out)


def pattern(listed: dict, hparams: dict) -> dict[str, tuple[str, ...]]:
    """Variable names with the layer number blanked, shapes in symbols: {"model/h*/...": ("C",)}."""
    C, V, T = hparams["n_embd"], hparams["n_vocab"], hparams["n_ctx"]
    symbol = {1: "1", C: "C", 3 * C: "3C", 4 * C: "4C", V: "V", T: "T"}
    assert len(symbol) == 6, "choose distinct sizes"
    return {re.sub(r"/h\d+/", "/h*/", k): tuple(symbol[d] for d in v) for k, v in listed.items()}


@pytest.fixture(scope="module")
def reference() -> Path:
    if not (REFERENCE / "model.ckpt.index").is_file():
        pytest.skip(f"OpenAI's 124M reference metadata not found at {REFERENCE}")
    return REFERENCE


# --- the name map, without TensorFlow -----------------------------------------------------------


def test_name_map_covers_every_parameter_once():
    cfg = replace(TINY, tie_embeddings=True)
    names = openai_name_map(cfg.n_layers)
    ours = set(GPTModel(cfg).state_dict()) - {"lm_head.weight"}
    assert sorted(names.values()) == sorted(ours)
    assert len(names) == 4 + 12 * cfg.n_layers
    assert names["model/h1/attn/c_attn/w"] == "h.1.attn.c_attn.weight"
    assert names["model/h0/ln_2/g"] == "h.0.ln_2.weight"
    assert names["model/ln_f/b"] == "ln_f.bias"
    assert set(CONV1D_KEYS) == {
        "attn.c_attn.weight",
        "attn.c_proj.weight",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    }


def test_params_round_trip_in_memory():
    model = random_model(replace(TINY, tie_embeddings=True))  # OpenAI's format stores wte only
    params = openai_params_from_gpt(model)
    assert {k: v.shape for k, v in params.items()} == openai_shapes(hparams_from_config(TINY))
    assert all(v.dtype == np.float32 for v in params.values())
    w = params["model/h1/attn/c_attn/w"]  # conv1d layout [1, in, out]
    assert np.array_equal(w[0].T, model.h[1].attn.c_attn.weight.detach().numpy())

    for tie in (False, True):
        other = GPTModel(replace(TINY, tie_embeddings=tie)).eval()
        assert load_weights_into_gpt(other, params) is other
        assert torch.equal(other.lm_head.weight, model.wte.weight)  # untied: a copy of wte
        torch.testing.assert_close(logits(other, TINY), logits(model, TINY), rtol=0, atol=0)


def test_load_errors_name_the_variable():
    params = openai_params_from_gpt(random_model(TINY))
    model = GPTModel(TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    bad = dict(params, **{"model/h1/mlp/c_fc/b": np.zeros(7, np.float32)})
    with pytest.raises(ValueError, match=r"model/h1/mlp/c_fc/b.*\(7,\).*\(128,\)"):
        load_weights_into_gpt(model, bad)
    bad = dict(params, **{"model/h0/attn/c_proj/w": np.zeros((32, 32), np.float32)})
    with pytest.raises(ValueError, match=r"model/h0/attn/c_proj/w.*\(32, 32\).*\(1, 32, 32\)"):
        load_weights_into_gpt(model, bad)
    bad = dict(params, **{"model/h1/mlp/c_fc/w": np.zeros((1, 32, 64), np.float32)})
    with pytest.raises(ValueError, match=r"model/h1/mlp/c_fc/w.*\(1, 32, 64\).*\(1, 32, 128\)"):
        load_weights_into_gpt(model, bad)
    bad = dict(params, **{"model/wpe": np.zeros((64, 32), np.float32)})
    with pytest.raises(ValueError, match=r"model/wpe.*\(64, 32\).*\(32, 32\)"):
        load_weights_into_gpt(model, bad)
    # nothing was half-loaded
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    deeper = GPTModel(replace(TINY, n_layers=3))
    with pytest.raises(ValueError, match=r"missing 12: \['model/h2/"):
        load_weights_into_gpt(deeper, params)
    with pytest.raises(ValueError, match=r"unexpected 1: \['model/extra'\]"):
        load_weights_into_gpt(model, dict(params, **{"model/extra": np.zeros(1)}))
    with pytest.raises(ValueError, match="qkv_bias=True"):
        load_weights_into_gpt(GPTModel(replace(TINY, qkv_bias=False)), params)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_load_refuses_weights_that_are_not_finite(bad):
    params = openai_params_from_gpt(random_model(TINY))
    params["model/h1/attn/c_proj/w"][0, 3, 5] = bad
    model = GPTModel(TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"model/h1/attn/c_proj/w .*1 values that are NaN or inf"):
        load_weights_into_gpt(model, params)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_config_from_hparams():
    hparams = {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}
    assert config_from_hparams(hparams) == GPTConfig.gpt2("124M", tie_embeddings=True)
    assert hparams_from_config(GPTConfig.gpt2("124M")) == hparams
    assert config_from_hparams(hparams, drop_rate=0.1, tie_embeddings=False).drop_rate == 0.1
    with pytest.raises(ValueError, match="emb_dim"):
        config_from_hparams(hparams, emb_dim=64)
    with pytest.raises(ValueError, match="n_head"):
        config_from_hparams({k: v for k, v in hparams.items() if k != "n_head"})


@pytest.mark.parametrize("name", ["", "a/b", "../124M", "124M/..", "/etc", ".hidden", "x y"])
def test_download_gpt2_rejects_bad_names(name, tmp_path):
    with pytest.raises(ValueError, match="invalid model name"):
        download_gpt2(name, tmp_path)


def test_write_rejects_what_the_format_cannot_hold(tmp_path):
    # all checked before TensorFlow is touched
    with pytest.raises(ValueError, match="vocab_size 50257"):
        write_openai_checkpoint(GPTModel(TINY), tmp_path / "a")
    no_bias = replace(TINY_GPT2, qkv_bias=False)
    with pytest.raises(ValueError, match="qkv_bias=False"):
        write_openai_checkpoint(GPTModel(no_bias), tmp_path / "b")
    untied = replace(TINY_GPT2, tie_embeddings=False)
    with pytest.raises(ValueError, match="lm_head differs from wte"):
        write_openai_checkpoint(GPTModel(untied), tmp_path / "c")
    params = openai_params_from_gpt(GPTModel(TINY_GPT2))
    with pytest.raises(TypeError, match="hparams"):
        write_openai_checkpoint(params, tmp_path / "d")
    hparams = hparams_from_config(TINY_GPT2)
    with pytest.raises(ValueError, match=r"model/wpe: got \(24, 16\), expected \(8, 16\)"):
        write_openai_checkpoint(params, tmp_path / "e", hparams={**hparams, "n_ctx": 8})
    with pytest.raises(TypeError, match="GPTModel or a params dict"):
        write_openai_checkpoint([1, 2], tmp_path / "f")
    assert not any(tmp_path.iterdir())


def test_import_does_not_load_heavy_libraries():
    code = (
        "import sys, gpt2lib, gpt2lib.weights, gpt2lib.huggingface, tools.mirror\n"
        "heavy = [m for m in ('tensorflow', 'transformers', 'safetensors') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- OpenAI's format through TensorFlow (one import, one written checkpoint) --------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[GPTModel, Path]:
    """A random GPT-2-shaped model written in OpenAI's format, BPE files from the mirror."""
    if not MIRROR.is_dir():
        pytest.skip(f"offline mirror not found at {MIRROR}")
    pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("openai")
    model = random_model(TINY_GPT2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT2LIB_MIRROR", MIRROR.as_uri())
        mp.setenv("GPT2LIB_HOME", str(root / "home"))
        ckpt = write_openai_checkpoint(model, root / "ckpts" / "tiny")
    return model, ckpt


def test_reference_is_what_the_name_map_expects(reference):
    tf = pytest.importorskip("tensorflow")
    hparams = json.loads((reference / "hparams.json").read_text())
    listed = dict(tf.train.list_variables(str(reference / "model.ckpt")))
    assert len(listed) == 148
    assert set(listed) == set(openai_name_map(hparams["n_layer"]))
    assert {k: tuple(v) for k, v in listed.items()} == openai_shapes(hparams)
    assert config_from_hparams(hparams) == GPTConfig.gpt2("124M", tie_embeddings=True)
    # the meta graph declares the same 148 variables
    meta = tf.compat.v1.MetaGraphDef.FromString((reference / "model.ckpt.meta").read_bytes())
    assert {n.name for n in meta.graph_def.node if n.op == "VariableV2"} == set(listed)


def test_written_checkpoint_has_openai_format(written, reference):
    tf = pytest.importorskip("tensorflow")
    model, ckpt = written
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(
        ["checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001"]
        + ["model.ckpt.index", "model.ckpt.meta", "vocab.bpe"]
    )
    assert [p.name for p in ckpt.parent.iterdir()] == ["tiny"]  # no temporary left behind
    # names, shapes (as functions of n_embd, n_vocab, n_ctx) and dtypes as in the real release
    hparams = json.loads((ckpt / "hparams.json").read_text())
    assert hparams == hparams_from_config(model.cfg)
    listed = {k: tuple(v) for k, v in tf.train.list_variables(str(ckpt / "model.ckpt"))}
    assert listed == openai_shapes(hparams)
    ref_listed = dict(tf.train.list_variables(str(reference / "model.ckpt")))
    ref_hparams = json.loads((reference / "hparams.json").read_text())
    assert pattern(listed, hparams) == pattern(ref_listed, ref_hparams)
    dtypes = tf.train.load_checkpoint(str(ckpt / "model.ckpt")).get_variable_to_dtype_map()
    ref_dtypes = tf.train.load_checkpoint(str(reference / "model.ckpt")).get_variable_to_dtype_map()
    assert set(dtypes.values()) == set(ref_dtypes.values()) == {tf.float32}
    # the small files: byte-identical where they can be, same layout where they cannot
    assert (ckpt / "checkpoint").read_bytes() == (reference / "checkpoint").read_bytes()
    for path in (ckpt / "hparams.json", reference / "hparams.json"):
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=2) + "\n"
        assert list(json.loads(text)) == ["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"]
    for url, sha256 in BPE_FILES.items():
        data = (ckpt / url.rsplit("/", 1)[1]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256
    meta = tf.compat.v1.MetaGraphDef.FromString((ckpt / "model.ckpt.meta").read_bytes())
    ref_meta = tf.compat.v1.MetaGraphDef.FromString((reference / "model.ckpt.meta").read_bytes())
    assert {n.name for n in meta.graph_def.node if n.op == "VariableV2"} == set(listed)
    assert meta.saver_def == ref_meta.saver_def
    assert str(ckpt.parent).encode() not in (ckpt / "model.ckpt.meta").read_bytes()


def test_write_then_load_gives_the_same_model(written, tmp_path):
    model, ckpt = written
    hparams, params = load_openai_checkpoint(ckpt)
    expected = openai_params_from_gpt(model)
    assert hparams == hparams_from_config(model.cfg)
    assert params.keys() == expected.keys()
    assert all(np.array_equal(params[k], expected[k]) for k in expected)

    loaded = model_from_openai_checkpoint(ckpt)
    assert not loaded.training and loaded.cfg == model.cfg
    torch.testing.assert_close(logits(loaded, model.cfg), logits(model, model.cfg), rtol=0, atol=0)
    untied = model_from_openai_checkpoint(ckpt, tie_embeddings=False, drop_rate=0.1)
    assert untied.lm_head.weight is not untied.wte.weight
    assert torch.equal(untied.lm_head.weight, model.wte.weight)
    assert untied.cfg.drop_rate == 0.1 and not untied.training

    # a params dict writes the same checkpoint; an existing directory is kept unless asked
    again = write_openai_checkpoint(
        params, tmp_path / "again", hparams=hparams, encoder_files=False
    )
    assert load_openai_checkpoint(again)[1].keys() == params.keys()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_openai_checkpoint(params, again, hparams=hparams, encoder_files=False)
    write_openai_checkpoint(model, again, encoder_files=ckpt, overwrite=True)
    assert (again / "vocab.bpe").read_bytes() == (ckpt / "vocab.bpe").read_bytes()
    with pytest.raises(FileNotFoundError, match="hparams.json"):
        load_openai_checkpoint(tmp_path)


def test_the_project_model_loads_from_the_package_never_from_openai(monkeypatch) -> None:
    """mini-shakespeare ships in gpt2lib/pretrained/ and never comes from under OpenAI's host."""
    from gpt2lib import weights
    from gpt2lib.mini import load_mini
    from gpt2lib.weights import load_pretrained

    def refuse(*args, **kwargs):
        raise AssertionError("the project's model was looked for under OpenAI's host")

    monkeypatch.setattr(weights, "download_gpt2", refuse)
    monkeypatch.setattr(weights, "describe_checkpoint", refuse)
    model, info = load_pretrained("mini-shakespeare")
    text = str(info)
    assert "gpt2lib/pretrained/mini-shakespeare/" in text and "not OpenAI's GPT-2" in text
    assert "openaipublic" not in text and "127.0.0.1" not in text and "served by" not in text
    saved = load_mini()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values(), strict=True))
    untied, _ = load_pretrained("mini-shakespeare", tie_embeddings=False, drop_rate=0.1)
    assert untied.cfg.drop_rate == 0.1 and torch.equal(untied.lm_head.weight, saved.wte.weight)


def test_a_mirrored_download_says_so_without_its_address() -> None:
    from gpt2lib.weights import PretrainedInfo

    url = "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/"
    text = str(PretrainedInfo("124M", "OpenAI's GPT-2 124M", url, 124_439_808, mirrored=True))
    assert f"from:       {url}" in text and "served by:  the local mirror" in text
    assert "127.0.0.1" not in text and "http://" not in text
