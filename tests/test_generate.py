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
    a = [
        next_token(logits, 1.0, generator=torch.Generator().manual_seed(3)).item() for _ in range(5)
    ]
    b = [
        next_token(logits, 1.0, generator=torch.Generator().manual_seed(3)).item() for _ in range(5)
    ]
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


# --- probes of the hardening pass ---------------------------------------------------------------


def test_top_p_one_is_a_no_op():
    """Probe: at p=1.0 a float32 cumulative sum reached 1.0 early and dropped up to 15,656 tokens."""
    logits = torch.randn(4, 50257, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    assert torch.isfinite(top_p_filter(logits, 0.9999999)).sum(-1).min() > 40000


@pytest.mark.parametrize("p", [0.5, 0.9, 0.95, 0.99])
def test_top_p_matches_transformers_warper(p):
    """Oracle: Hugging Face's TopPLogitsWarper on the same logits keeps the same tokens, up to
    two tokens at the boundary (summation order)."""
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = torch.randn(6, 50257, generator=torch.Generator().manual_seed(1)) * 2.5
    ours = torch.isfinite(top_p_filter(logits, p))
    theirs = torch.isfinite(TopPLogitsWarper(top_p=p)(None, logits.clone()))
    assert ((ours != theirs).sum(-1) <= 2).all()
    assert (ours.sum(-1) > 1).all()


@pytest.mark.parametrize("k", [1, 5, 50, 50257])
def test_top_k_matches_transformers_warper(k):
    from transformers.generation.logits_process import TopKLogitsWarper

    logits = torch.randn(3, 50257, generator=torch.Generator().manual_seed(2))
    ours = top_k_filter(logits, k)
    theirs = TopKLogitsWarper(top_k=k)(None, logits.clone())
    assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs))


def test_out_of_range_token_ids_are_named(model):
    """Probe: an id >= vocab or < 0 gave `IndexError: index out of range in self`."""
    with pytest.raises(ValueError, match=r"token id 50257 is out of range.*50257 ids"):
        model(torch.tensor([[1, 50257]]))
    with pytest.raises(ValueError, match=r"token id -3 is out of range"):
        generate(model, torch.tensor([[-3, 5]]), 2)
    with pytest.raises(TypeError, match="integer"):
        model(torch.tensor([[1.0, 2.0]]))


def test_generate_restores_training_mode_when_it_raises(model, monkeypatch):
    """Probe: generate left a training model in eval mode when it raised."""
    model.train()
    try:

        def broken(*args, **kwargs):
            raise RuntimeError("out of memory")

        monkeypatch.setattr(model, "hidden", broken)
        with pytest.raises(RuntimeError, match="out of memory"):
            generate(model, torch.tensor([[1, 2]]), 3)
        assert model.training
    finally:
        model.eval()


def test_nan_temperature_is_rejected(model):
    """Probe: temperature=nan passed validation."""
    with pytest.raises(ValueError, match="temperature"):
        generate(model, torch.tensor([[1, 2]]), 2, temperature=float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        next_token(torch.zeros(1, 5), temperature=float("inf"))


def test_bad_attention_masks_are_rejected(model):
    """Probe: a mask with values other than 0/1, or an all-padding row, shifted positions."""
    idx = torch.tensor([[0, 5, 6], [7, 8, 9]])
    with pytest.raises(ValueError, match=r"only 0 \(padding\) and 1.*found 2"):
        generate(model, idx, 2, attention_mask=torch.tensor([[0, 2, 2], [1, 1, 1]]))
    with pytest.raises(ValueError, match=r"rows \[0\] are all padding"):
        generate(model, idx, 2, attention_mask=torch.tensor([[0, 0, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match="only 0"):
        model(idx, attention_mask=torch.tensor([[0.0, 0.5, 1.0], [1.0, 1.0, 1.0]]))


def test_sampling_happens_on_the_generators_device(monkeypatch):
    """A CPU generator with a model on the GPU crashed torch.multinomial ("Expected a 'cuda'
    device type for generator"). Sampling moves to the generator's device and back."""
    seen = {}

    def recording(probs, num_samples, generator=None):
        seen["probs"], seen["generator"] = probs.device, generator.device
        return torch.zeros(probs.shape[0], num_samples, dtype=torch.long)  # "drawn" there

    class MetaGenerator:  # stands in for a generator on another device than the logits
        device = torch.device("meta")

    monkeypatch.setattr(torch, "multinomial", recording)
    token = next_token(torch.randn(2, 10), temperature=1.0, generator=MetaGenerator())
    assert seen == {"probs": torch.device("meta"), "generator": torch.device("meta")}
    assert token.shape == (2, 1) and token.device == torch.device("cpu")


def test_same_seed_same_tokens_with_a_generator_on_the_logits_device():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    a = next_token(logits, 0.8, top_k=10, generator=torch.Generator().manual_seed(7))
    b = next_token(logits, 0.8, top_k=10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_token_ids_are_checked_when_a_sequence_starts_not_at_every_step(model, monkeypatch):
    """The check syncs the device; decoding steps feed the model's own tokens, always valid."""
    from gpt2lib import model as model_module

    calls = []
    real = model_module.check_token_ids
    monkeypatch.setattr(model_module, "check_token_ids", lambda *a: calls.append(1) or real(*a))
    generate(model, torch.tensor([[1, 2, 3]]), 8)  # cached: one prefill, then 7 decoding steps
    assert len(calls) == 1
