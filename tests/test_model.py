import dataclasses

import pytest
import torch
import torch.nn.functional as F

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.params import count_parameters, gpt_parameter_count, memory_bytes
from gpt2lib.teaching import GELU, LayerNorm

SMALL = GPTConfig(vocab_size=128, context_length=32, emb_dim=48, n_heads=4, n_layers=2)


def test_layernorm_matches_torch():
    x = torch.randn(3, 5, 16) * 3 + 1
    ours, ref = LayerNorm(16), torch.nn.LayerNorm(16)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(16))
        ref.bias.copy_(torch.randn(16))
        ours.weight.copy_(ref.weight)
        ours.bias.copy_(ref.bias)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)


def test_gelu_is_the_tanh_approximation():
    x = torch.linspace(-6, 6, 101)
    assert torch.allclose(GELU()(x), F.gelu(x, approximate="tanh"), atol=1e-6)


def test_logits_shape_and_context_check():
    model = GPTModel(SMALL)
    assert model(torch.randint(0, 128, (2, 7))).shape == (2, 7, 128)
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_tied_head_shares_the_embedding():
    model = GPTModel(dataclasses.replace(SMALL, tie_embeddings=True))
    assert model.lm_head.weight is model.wte.weight
    untied = GPTModel(SMALL)
    assert untied.lm_head.weight is not untied.wte.weight


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_count_formula_matches_model(tied):
    cfg = dataclasses.replace(SMALL, tie_embeddings=tied)
    assert count_parameters(GPTModel(cfg)) == gpt_parameter_count(cfg)


def test_gpt2_124m_parameter_counts():
    cfg = GPTConfig.gpt2("124M")
    assert gpt_parameter_count(cfg, tied=True) == 124_439_808
    assert gpt_parameter_count(cfg, tied=False) == 163_037_184
    no_bias = dataclasses.replace(cfg, qkv_bias=False)  # the book's chapter-4 configuration
    assert gpt_parameter_count(no_bias, tied=True) == 124_412_160
    assert gpt_parameter_count(no_bias, tied=False) == 163_009_536
    assert count_parameters(GPTModel(dataclasses.replace(cfg, tie_embeddings=True))) == 124_439_808
    assert memory_bytes(163_037_184) == 652_148_736
    assert memory_bytes(163_037_184, torch.bfloat16) == 326_074_368


@pytest.fixture(scope="module", params=[SMALL, GPTConfig.gpt2("124M")], ids=["small", "124M"])
def hf_pair(request):
    """Hugging Face's GPT2LMHeadModel with random weights, and our model loaded from it."""
    transformers = pytest.importorskip("transformers")
    from gpt2lib.huggingface import load_hf_state_dict

    cfg = request.param
    hf_cfg = transformers.GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.context_length,
        n_embd=cfg.emb_dim,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_cfg)
    ours = GPTModel(cfg)
    load_hf_state_dict(ours, hf.state_dict())
    return cfg, ours, hf


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_logits_equal_huggingface(hf_pair, mode):
    """The correctness oracle: same weights, same logits (train mode with dropout 0)."""
    cfg, ours, hf = hf_pair
    ours.train(mode == "train")
    hf.train(mode == "train")
    idx = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours(idx) - hf(idx).logits).abs().max().item()
    assert diff <= 1e-4


def test_scaled_residual_init():
    """GPT-2's init: N(0, 0.02) everywhere, the two residual projections 0.02 / sqrt(2 n_layers)."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=1000, context_length=64, emb_dim=256, n_heads=4, n_layers=8)
    model = GPTModel(cfg)
    residual = torch.cat(
        [w.flatten() for n, w in model.named_parameters() if n.endswith("c_proj.weight")]
    )
    other = torch.cat([model.h[i].mlp.c_fc.weight.flatten() for i in range(8)])
    assert abs(residual.std().item() / (0.02 / 4) - 1) < 0.02  # sqrt(2 * 8) = 4
    assert abs(other.std().item() / 0.02 - 1) < 0.02
    assert abs(model.wte.weight.std().item() / 0.02 - 1) < 0.02
    assert all(b.attn.c_proj.bias.abs().max() == 0 for b in model.h)


def test_attention_weights_of_every_layer_are_causal_and_sum_to_one():
    from gpt2lib.model import attention_weights

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50, context_length=16, emb_dim=16, n_heads=2, n_layers=3)
    model = GPTModel(cfg).train()
    idx = torch.randint(0, 50, (2, 7))
    w = attention_weights(model, idx)
    assert w.shape == (3, 2, 2, 7, 7) and model.training  # the mode is restored
    assert torch.allclose(w.sum(-1), torch.ones(3, 2, 2, 7))
    assert torch.all(w.triu(diagonal=1) == 0)  # nothing above the diagonal
    # the last layer's weights are the ones the model's forward pass uses
    with torch.no_grad():
        x = model.wte(idx) + model.wpe(torch.arange(7))
        for block in model.h[:-1]:
            x = block.eval()(x)
        _, expected = model.h[-1].attn.forward_with_weights(model.h[-1].ln_1(x))
    assert torch.allclose(w[-1], expected, atol=1e-6)
