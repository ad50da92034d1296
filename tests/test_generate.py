import pytest
import torch

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.generate import generate, generate_text, next_token, top_k_filter, top_p_filter

CFG = GPTConfig(vocab_size=50257, context_length=16, emb_dim=32, n_heads=2, n_layers=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


def test_top_k_keeps_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    out = top_k_filter(logits, 2)
    assert torch.equal(torch.isfinite(out), torch.tensor([[False, True, False, True]]))
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(logits, 0)


def test_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = top_p_filter(probs.log(), 0.75)  # 0.5 + 0.3 reaches 0.75: two tokens
    assert torch.equal(torch.isfinite(out), torch.tensor([[True, True, False, False]]))
    assert torch.isfinite(top_p_filter(probs.log(), 0.01)).sum() == 1  # top-1 always survives
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(probs, 1.5)


def test_greedy_is_argmax_and_sampling_is_seeded():
    logits = torch.tensor([[0.1, 2.0, 0.3]])
    assert next_token(logits).item() == 1
    a = [next_token(logits, 1.0, generator=torch.Generator().manual_seed(3)).item() for _ in range(5)]
    b = [next_token(logits, 1.0, generator=torch.Generator().manual_seed(3)).item() for _ in range(5)]
    assert a == b
    assert next_token(logits, 0.5, top_k=1).item() == 1


def test_generate_greedy_matches_manual_loop(model):
    idx = torch.tensor([[1, 2, 3]])
    out = generate(model, idx, max_new_tokens=5)
    manual = idx
    with torch.no_grad():
        for _ in range(5):
            manual = torch.cat([manual, model(manual)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, manual)


def test_generate_crops_to_context(model):
    idx = torch.randint(0, 100, (1, 15))
    out = generate(model, idx, max_new_tokens=6)  # runs past context_length 16
    assert out.shape == (1, 21)
    with torch.no_grad():
        expected_last = model(out[:, -17:-1])[:, -1].argmax(-1)
    assert out[0, -1].item() == expected_last.item()


def test_generate_stops_at_eos(model):
    idx = torch.tensor([[1, 2, 3]])
    first = generate(model, idx, max_new_tokens=1)[0, -1].item()
    out = generate(model, idx, max_new_tokens=10, eos_id=first)
    assert out.shape == (1, 4) and out[0, -1].item() == first


def test_generate_text_round_trip(model):
    text = generate_text(model, "Hello", max_new_tokens=3)
    assert text.startswith("Hello")


def test_generate_rejects_1d(model):
    with pytest.raises(ValueError, match="batch"):
        generate(model, torch.tensor([1, 2]), 1)
