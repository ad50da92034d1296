"""Tests for gpt2lib.huggingface: Hugging Face's GPT-2 format in and out, with transformers as
the oracle (one import, shared by a module-scoped fixture)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_weights import logits, random_model  # tests/ is on the path, as pytest puts it

from gpt2lib.config import GPTConfig
from gpt2lib.huggingface import config_from_hf, export_hf, load_hf_safetensors, load_hf_state_dict
from gpt2lib.model import GPTModel

TINY = GPTConfig.tiny()


@pytest.fixture(scope="module")
def hf_model():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def test_hf_import_parity(hf_model):
    cfg = config_from_hf(hf_model.config.to_dict())
    assert cfg == replace(TINY, drop_rate=0.1, tie_embeddings=True)  # Hugging Face's defaults
    expected = logits(hf_model, cfg)
    for state_dict in (hf_model.state_dict(), hf_model.transformer.state_dict()):
        ours = load_hf_state_dict(GPTModel(cfg).eval(), state_dict)
        assert (logits(ours, cfg) - expected).abs().max() <= 1e-4
    # Hugging Face's older checkpoints also carry the causal-mask buffers: skipped
    with_buffers = dict(hf_model.transformer.state_dict())
    with_buffers["h.0.attn.bias"] = torch.ones(1, 1, 32, 32)
    with_buffers["h.1.attn.masked_bias"] = torch.tensor(-1e4)
    untied = GPTModel(replace(cfg, tie_embeddings=False)).eval()
    load_hf_state_dict(untied, with_buffers)
    assert torch.equal(untied.lm_head.weight, hf_model.lm_head.weight)
    assert (logits(untied, cfg) - expected).abs().max() <= 1e-4


def test_hf_import_errors(hf_model):
    cfg = config_from_hf(hf_model.config.to_dict())
    state = dict(hf_model.state_dict())
    model = GPTModel(cfg)
    with pytest.raises(ValueError, match=r"missing 1: \['h.1.mlp.c_fc.bias'\]"):
        load_hf_state_dict(model, {k: v for k, v in state.items() if "h.1.mlp.c_fc.bias" not in k})
    with pytest.raises(ValueError, match=r"unexpected 1: \['h.0.attn.q_proj.weight'\]"):
        load_hf_state_dict(model, {**state, "transformer.h.0.attn.q_proj.weight": torch.zeros(1)})
    bad = {**state, "transformer.h.1.attn.c_attn.weight": torch.zeros(96, 32)}  # not transposed
    with pytest.raises(ValueError, match=r"transformer.h.1.attn.c_attn.weight.*\(32, 96\)"):
        load_hf_state_dict(model, bad)
    tied = GPTModel(replace(cfg, tie_embeddings=True))
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        load_hf_state_dict(tied, {**state, "lm_head.weight": torch.zeros(100, 32)})
    with pytest.raises(ValueError, match="qkv_bias=True"):
        load_hf_state_dict(GPTModel(replace(cfg, qkv_bias=False)), state)
    nan = {**state, "transformer.h.0.mlp.c_fc.bias": torch.full((128,), float("nan"))}
    with pytest.raises(ValueError, match=r"transformer.h.0.mlp.c_fc.bias .*NaN or infinite"):
        load_hf_state_dict(model, nan)
    with pytest.raises(ValueError, match="not a GPT-2 config"):
        config_from_hf({**hf_model.config.to_dict(), "model_type": "llama"})


def test_hf_export_parity(hf_model, tmp_path):
    transformers = pytest.importorskip("transformers")
    for i, cfg in enumerate(
        (
            TINY,  # untied head
            replace(TINY, tie_embeddings=True),
            replace(TINY, qkv_bias=False),  # exported with zero biases
        )
    ):
        ours = random_model(cfg, seed=i)
        out = export_hf(ours, tmp_path / f"hf{i}")
        theirs = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
        assert theirs.config.tie_word_embeddings == cfg.tie_embeddings
        assert (logits(theirs, cfg) - logits(ours, cfg)).abs().max() <= 1e-4
        back = load_hf_safetensors(out)  # reads config.json next to the file
        assert back.cfg == replace(cfg, qkv_bias=True)
        assert (logits(back, cfg) - logits(ours, cfg)).abs().max() <= 1e-4


def test_load_hf_safetensors_written_by_transformers(hf_model, tmp_path, monkeypatch):
    hf_model.save_pretrained(tmp_path / "saved")
    expected = logits(hf_model, TINY)
    for source in (tmp_path / "saved", tmp_path / "saved" / "model.safetensors"):
        assert (logits(load_hf_safetensors(source), TINY) - expected).abs().max() <= 1e-4
    # without config.json the configuration must be given
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_bytes(
        (tmp_path / "saved" / "model.safetensors").read_bytes()
    )
    with pytest.raises(ValueError, match="pass cfg="):
        load_hf_safetensors(bare)
    cfg = config_from_hf(hf_model.config.to_dict())
    assert (logits(load_hf_safetensors(bare, cfg=cfg), TINY) - expected).abs().max() <= 1e-4

    # a hub repository, fetched through the download layer from a (file://) mirror
    repo_dir = tmp_path / "mirror" / "huggingface.co" / "someone" / "tiny" / "resolve" / "main"
    repo_dir.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (repo_dir / name).write_bytes((tmp_path / "saved" / name).read_bytes())
    monkeypatch.setenv("GPT2LIB_MIRROR", (tmp_path / "mirror").as_uri())
    monkeypatch.setenv("GPT2LIB_HOME", str(tmp_path / "home"))
    assert (logits(load_hf_safetensors("someone/tiny"), TINY) - expected).abs().max() <= 1e-4

    # OpenAI's sizes on the hub: the canonical URL (not reachable here, so stop at the fetch)
    urls = []

    def fake_fetch(url, sha256=None, size=None):
        urls.append(url)
        raise ConnectionError("offline")

    monkeypatch.setattr("gpt2lib.huggingface.fetch", fake_fetch)
    for name in ("gpt2", "openai-community/gpt2-xl"):
        with pytest.raises(ConnectionError):
            load_hf_safetensors(name)
    assert urls == [
        "https://huggingface.co/openai-community/gpt2/resolve/main/model.safetensors",
        "https://huggingface.co/openai-community/gpt2-xl/resolve/main/model.safetensors",
    ]
    with pytest.raises(ValueError, match="neither a safetensors file"):
        load_hf_safetensors("no such thing")
