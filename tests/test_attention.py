import torch
import torch.nn.functional as F

from gpt2lib import GPTConfig
from gpt2lib.attention import MultiHeadAttention, attention_with_weights
from gpt2lib.teaching import (
    CausalAttention,
    MultiHeadAttentionWrapper,
    SelfAttention,
    simple_attention,
)

CFG = GPTConfig(vocab_size=100, context_length=16, emb_dim=24, n_heads=3, n_layers=1)


def test_simple_attention_rows_are_convex_mixes():
    x = torch.randn(5, 4)
    out = simple_attention(x)
    weights = torch.softmax(x @ x.T, dim=-1)
    assert torch.allclose(weights.sum(-1), torch.ones(5))
    assert torch.allclose(out, weights @ x)


def test_causal_attention_ignores_the_future():
    torch.manual_seed(0)
    attn = CausalAttention(4, 6, context_length=8, dropout=0.0).eval()
    x = torch.randn(2, 8, 4)
    y = attn(x)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(2, 3, 4)  # change only the future of position 4
    assert torch.allclose(attn(x2)[:, :5], y[:, :5], atol=1e-6)
    assert not torch.allclose(attn(x2)[:, 5:], y[:, 5:])


def test_causal_attention_matches_sdpa():
    torch.manual_seed(0)
    attn = CausalAttention(4, 6, context_length=8, dropout=0.0)
    x = torch.randn(2, 8, 4)
    q, k, v = attn.W_query(x), attn.W_key(x), attn.W_value(x)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(attn(x), expected, atol=1e-6)


def test_self_attention_shapes():
    assert SelfAttention(4, 6)(torch.randn(3, 5, 4)).shape == (3, 5, 6)


def test_sdpa_and_explicit_paths_agree():
    torch.manual_seed(0)
    mha = MultiHeadAttention(CFG).eval()
    x = torch.randn(2, 10, CFG.emb_dim)
    y_fast = mha(x)
    y_slow, weights = mha.forward_with_weights(x)
    assert torch.allclose(y_fast, y_slow, atol=1e-6)
    assert weights.shape == (2, CFG.n_heads, 10, 10)
    assert torch.allclose(weights.sum(-1), torch.ones(2, CFG.n_heads, 10), atol=1e-6)
    assert torch.all(weights.triu(diagonal=1) == 0)  # causal: nothing above the diagonal


def test_explicit_path_with_longer_keys_aligns_to_the_end():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 7, 4), torch.randn(1, 2, 7, 4)
    out, w = attention_with_weights(q, k, v)
    full_q = torch.cat([torch.randn(1, 2, 4, 4), q], dim=2)
    full, _ = attention_with_weights(full_q, k, v)
    assert torch.allclose(out, full[:, :, -3:], atol=1e-6)
    assert torch.all(w[..., 0, 5:] == 0)


def test_wrapper_equals_fused_heads():
    """The loop over heads and the batched layer compute the same thing given the same weights."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(CFG).eval()
    hs = CFG.head_dim
    wrapper = MultiHeadAttentionWrapper(
        CFG.emb_dim, hs, CFG.context_length, 0.0, CFG.n_heads, qkv_bias=True
    )
    W, b = mha.c_attn.weight, mha.c_attn.bias  # (3C, C), rows: q | k | v
    with torch.no_grad():
        for h, head in enumerate(wrapper.heads):
            for i, lin in enumerate((head.W_query, head.W_key, head.W_value)):
                rows = slice(i * CFG.emb_dim + h * hs, i * CFG.emb_dim + (h + 1) * hs)
                lin.weight.copy_(W[rows])
                lin.bias.copy_(b[rows])
    x = torch.randn(2, 9, CFG.emb_dim)
    assert torch.allclose(mha.c_proj(wrapper(x)), mha(x), atol=1e-5)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    mha = MultiHeadAttention(GPTConfig(**{**CFG.__dict__, "drop_rate": 0.5}))
    x = torch.randn(1, 6, CFG.emb_dim)
    mha.eval()
    assert torch.equal(mha(x), mha(x))
    mha.train()
    assert not torch.equal(mha(x), mha(x))
