import dataclasses

import pytest

from gpt2lib import GPTConfig


@pytest.mark.parametrize(
    "size, dims",
    [("124M", (768, 12, 12)), ("355M", (1024, 24, 16)), ("774M", (1280, 36, 20)), ("1558M", (1600, 48, 25))],
)
def test_gpt2_sizes(size, dims):
    cfg = GPTConfig.gpt2(size)
    assert (cfg.emb_dim, cfg.n_layers, cfg.n_heads) == dims
    assert (cfg.vocab_size, cfg.context_length, cfg.qkv_bias) == (50257, 1024, True)


def test_unknown_size_lists_valid_ones():
    with pytest.raises(ValueError, match="124M, 355M, 774M, 1558M"):
        GPTConfig.gpt2("125M")


def test_overrides_with_replace():
    cfg = dataclasses.replace(GPTConfig.gpt2("124M"), context_length=256, drop_rate=0.1)
    assert (cfg.context_length, cfg.drop_rate, cfg.emb_dim) == (256, 0.1, 768)
    assert GPTConfig.gpt2("124M", qkv_bias=False).qkv_bias is False


@pytest.mark.parametrize(
    "kwargs, field",
    [({"emb_dim": 10, "n_heads": 3}, "divisible"), ({"n_layers": 0}, "n_layers"), ({"drop_rate": 1.0}, "drop_rate")],
)
def test_invalid_config(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**kwargs)
