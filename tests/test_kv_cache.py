import dataclasses

import pytest
import torch
import torch.nn.functional as F

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.attention import MultiHeadAttention, attention_with_weights, causal_mask
from gpt2lib.fast import candidates, optimize_for_inference
from gpt2lib.generate import generate, generate_batch
from gpt2lib.kv_cache import KVCache

SMALL = GPTConfig.tiny()
PROMPTS = [[5, 17, 3], [8, 1, 2, 9, 44, 61, 7, 12], [70], [33, 34, 35, 36, 2]]


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return GPTModel(SMALL).eval()


@pytest.fixture(scope="module")
def gpt2_shape():
    """GPT-2 124M's shape with random weights."""
    torch.manual_seed(0)
    return GPTModel(GPTConfig.gpt2("124M", tie_embeddings=True)).eval()


def test_cache_shapes_update_and_errors():
    cache = KVCache.empty(SMALL, batch_size=2, max_len=6)
    assert len(cache.keys) == SMALL.n_layers and cache.max_len == 6 and cache.batch_size == 2
    assert cache.keys[0].shape == (2, SMALL.n_heads, 6, SMALL.head_dim)
    k = torch.randn(2, SMALL.n_heads, 4, SMALL.head_dim)
    k_all, v_all = cache.update(0, k, -k)
    assert k_all.shape == (2, SMALL.n_heads, 4, SMALL.head_dim) and torch.equal(v_all, -k)
    cache.advance(4)
    k_all, _ = cache.update(0, k[:, :, :2], k[:, :, :2])
    assert k_all.shape[2] == 6 and torch.equal(k_all[:, :, 4:], k[:, :, :2])
    with pytest.raises(ValueError, match="cannot add"):
        cache.update(1, k, k)  # 4 + 4 > 6
    cache.reset()
    assert cache.length == 0
    with pytest.raises(ValueError, match="max_len"):
        KVCache.empty(SMALL, batch_size=1, max_len=SMALL.context_length + 1)


def test_causal_mask_aligns_queries_to_the_end_and_hides_padding():
    assert torch.equal(causal_mask(3, 3), torch.ones(3, 3, dtype=torch.bool).tril())
    assert torch.equal(causal_mask(2, 4), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool())
    key_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    mask = causal_mask(3, 3, key_mask)
    assert mask.shape == (2, 1, 3, 3)
    assert torch.equal(mask[0, 0], torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1]]).bool())
    assert torch.equal(mask[1, 0], causal_mask(3, 3))


def test_explicit_attention_with_a_mask_matches_sdpa():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    mask = causal_mask(4, 6, torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]))
    out, weights = attention_with_weights(q, k, v, attn_mask=mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)
    assert torch.all(weights[0, :, :, :2] == 0)  # padding keys get no weight


def test_attention_layer_with_cache_matches_full_sequence():
    torch.manual_seed(0)
    mha = MultiHeadAttention(SMALL, layer_idx=1).eval()
    x = torch.randn(2, 7, SMALL.emb_dim)
    cache = KVCache.empty(SMALL, batch_size=2)
    first = mha(x[:, :4], cache=cache)
    cache.advance(4)
    rest, weights = mha.forward_with_weights(x[:, 4:], cache=cache)
    full = mha(x)
    assert torch.allclose(torch.cat([first, rest], dim=1), full, atol=1e-5)
    assert weights.shape == (2, SMALL.n_heads, 3, 7)


@pytest.mark.parametrize("model_name", ["small", "gpt2_shape"])
def test_cached_logits_equal_uncached(model_name, request):
    """Prefill, then a chunk, then single tokens: every logit as the full forward computes it."""
    model = request.getfixturevalue(model_name)
    V = model.cfg.vocab_size
    idx = torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(1))
    cache = KVCache.empty(model.cfg, batch_size=2, max_len=8)
    with torch.inference_mode():
        full = model(idx)
        parts = [model(idx[:, :4], cache=cache), model(idx[:, 4:6], cache=cache)]
        parts += [model(idx[:, t : t + 1], cache=cache) for t in range(6, 8)]
        last = model.head(model.hidden(idx)[:, -1:])
    assert cache.length == 8
    assert (torch.cat(parts, dim=1) - full).abs().max().item() <= 1e-4
    assert torch.allclose(last, full[:, -1:], atol=1e-5)


def test_model_rejects_too_long_input_after_cache(small):
    cache = KVCache.empty(SMALL, batch_size=1)
    cache.length = SMALL.context_length - 2
    with pytest.raises(ValueError, match="context_length"):
        small(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="attention_mask"):
        small(torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="rows"):
        small(torch.zeros(2, 3, dtype=torch.long), cache=KVCache.empty(SMALL, batch_size=1))


@pytest.mark.parametrize("prompt_len,new", [(4, 10), (20, 25), (40, 6)])
def test_greedy_cached_equals_uncached_small(small, prompt_len, new):
    """Also past the context (32): the cache refills with the window the uncached loop uses."""
    idx = torch.randint(
        0, SMALL.vocab_size, (3, prompt_len), generator=torch.Generator().manual_seed(2)
    )
    cached = generate(small, idx, new, use_cache=True)
    assert torch.equal(cached, generate(small, idx, new, use_cache=False))
    assert cached.shape == (3, prompt_len + new)


def test_greedy_cached_equals_uncached_gpt2_shape(gpt2_shape):
    idx = torch.randint(0, 50257, (1, 6), generator=torch.Generator().manual_seed(3))
    assert torch.equal(generate(gpt2_shape, idx, 3), generate(gpt2_shape, idx, 3, use_cache=False))


def test_greedy_cached_equals_uncached_past_context_gpt2_width():
    torch.manual_seed(0)
    cfg = dataclasses.replace(GPTConfig.gpt2("124M"), context_length=8, n_layers=2)
    model = GPTModel(cfg).eval()
    idx = torch.randint(0, 50257, (1, 5), generator=torch.Generator().manual_seed(4))
    assert torch.equal(generate(model, idx, 8), generate(model, idx, 8, use_cache=False))


def test_left_padding_gives_each_row_its_own_positions(small):
    ids = torch.tensor([[7, 8, 9]])
    padded = torch.tensor([[0, 0, 7, 8, 9], [1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.inference_mode():
        out = small(padded, attention_mask=mask)
        assert torch.allclose(out[0, 2:], small(ids)[0], atol=1e-5)
        assert torch.allclose(out[1], small(padded[1:])[0], atol=1e-5)


@pytest.mark.parametrize("use_cache", [True, False])
def test_batched_generation_equals_one_by_one(small, use_cache):
    batch = generate_batch(small, PROMPTS, 30, use_cache=use_cache)  # 8 + 30 > 32: past context
    for prompt, row in zip(PROMPTS, batch, strict=True):
        single = generate(small, torch.tensor([prompt]), 30, use_cache=use_cache)
        assert row == single[0, len(prompt) :].tolist()


def test_batched_generation_stops_each_row_at_eos(small):
    free = generate_batch(small, PROMPTS, 8)
    eos = free[0][2]  # the third token of row 0 becomes the end-of-text token
    rows = generate_batch(small, PROMPTS, 8, eos_id=eos)
    for prompt, row, unconstrained in zip(PROMPTS, rows, free, strict=True):
        single = generate(small, torch.tensor([prompt]), 8, eos_id=eos)[0, len(prompt) :].tolist()
        assert row == single
        cut = unconstrained.index(eos) + 1 if eos in unconstrained else len(unconstrained)
        assert row == unconstrained[:cut]
    assert rows[0][-1] == eos and len(rows[0]) <= 3


def test_generate_batch_and_generate_reject_bad_input(small):
    with pytest.raises(ValueError, match="prompts"):
        generate_batch(small, [[1], []], 2)
    with pytest.raises(ValueError, match="attention_mask"):
        generate(small, torch.zeros(2, 3, dtype=torch.long), 2, attention_mask=torch.ones(2, 2))
    with pytest.raises(ValueError, match="at least one token"):
        generate(small, torch.zeros(2, 0, dtype=torch.long), 2)


def test_optimize_for_inference_to_bfloat16():
    torch.manual_seed(0)
    model = GPTModel(SMALL)
    idx = torch.randint(0, SMALL.vocab_size, (2, 6), generator=torch.Generator().manual_seed(5))
    assert all(not s.compile for s in candidates("cpu"))  # "auto" never compiles on a CPU
    settings = optimize_for_inference(model, dtype=torch.bfloat16, compile=False)
    assert settings.model is model and not model.training
    assert model.wte.weight.dtype == torch.bfloat16 and settings.decoder is None
    assert generate(model, idx, 5).shape == (2, 11)
    with pytest.raises(TypeError, match="dtype"):
        optimize_for_inference(model, dtype=torch.int8, compile=False)


def test_fp32_cached_path_is_deterministic_and_batch_independent(small):
    idx = torch.randint(0, SMALL.vocab_size, (2, 5), generator=torch.Generator().manual_seed(6))
    assert torch.equal(generate(small, idx, 6), generate(small, idx, 6))
    assert torch.equal(generate(small, idx[:1], 6), generate(small, idx, 6)[:1])
