"""The compiled static decode step: one compilation per batch size and cache length, the same
greedy tokens as the default path, and the measured choice of ``optimize_for_inference``."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.fast import Setting, choose, optimize_for_inference, transpose_weight_storage
from gpt2lib.generate import generate, generate_batch, left_pad
from gpt2lib.static_decode import BUCKET, StaticDecoder, fits

CFG = GPTConfig.tiny(tie_embeddings=True, context_length=2 * BUCKET)


@pytest.fixture()
def model() -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


def prompt(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(
        0, CFG.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed)
    )


def test_decode_step_compiles_once_per_batch_size_and_cache_length(model):
    counter = CompileCounter()  # counts the graphs handed to the backend
    decoder = StaticDecoder(model, backend=counter)
    first = decoder.generate(prompt(1, 7, 1), 64)  # prefill + 63 decode steps
    assert first.shape == (1, 71)
    assert counter.frame_count == 2  # the prefill and the decode step, once each
    decoder.generate(prompt(1, 12, 2), 64)  # another length, the same bucket
    assert counter.frame_count == 2
    decoder.generate(prompt(3, 5, 3), 10)  # batch 3: both compile once more
    assert counter.frame_count == 4
    decoder.generate(prompt(3, 9, 4), 20)
    assert counter.frame_count == 4
    generate(model, prompt(1, 7, 1), 64)  # without the decoder: the default path, nothing compiled
    assert counter.frame_count == 4


def test_compiled_greedy_tokens_equal_the_default_path(model):
    idx = prompt(1, 9, 4)
    expected = generate(model, idx, 40)
    decoder = StaticDecoder(model)  # inductor, float32
    assert torch.equal(decoder.generate(idx, 40), expected)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]  # left-padded together
    padded, mask = left_pad(prompts, 0)
    compiled = decoder.generate(padded, 12, attention_mask=mask)[:, padded.shape[1] :].tolist()
    assert compiled == generate_batch(model, prompts, 12)


def test_static_path_falls_back_where_the_sequence_outgrows_the_context(model):
    assert fits(model, CFG.context_length - 9, 10) and not fits(model, CFG.context_length - 8, 10)
    idx = prompt(1, CFG.context_length - 4, 5)
    counter = CompileCounter()
    decoder = StaticDecoder(model, backend=counter)
    out = decoder.generate(idx, 10)  # past the context: the sliding window
    assert counter.frame_count == 0
    assert torch.equal(out, generate(model, idx, 10))


def test_decoder_refuses_a_sequence_that_does_not_fit(model):
    with pytest.raises(ValueError, match="context"):
        StaticDecoder(model).start(prompt(1, CFG.context_length, 6), 5)


def test_auto_keeps_a_candidate_only_if_faster_at_every_batch_size():
    default, bf16, compiled = Setting(), Setting(torch.bfloat16), Setting(compile=True)
    rates = {
        default: {1: 100.0, 8: 500.0},
        bf16: {1: 200.0, 8: 450.0},
        compiled: {1: 300.0, 8: 505.0},
    }
    assert choose(rates) == default  # bf16 loses at 8; compiled wins at 8 by less than the margin
    rates[compiled][8] = 600.0
    assert choose(rates) == compiled
    assert choose({default: {1: 1.0}}) == default


def test_optimize_for_inference_measures_and_records_its_choice(model, monkeypatch):
    import gpt2lib.fast as fast

    options = [Setting(), Setting(torch.bfloat16), Setting(transpose=True)]
    monkeypatch.setattr(fast, "candidates", lambda *a: options)
    settings = optimize_for_inference(model, batch_sizes=(1, 2))
    assert list(settings.measured) == options
    assert all(set(r) == {1, 2} and min(r.values()) > 0 for r in settings.measured.values())
    report = settings.report()
    assert report["dtype"] == str(model.wte.weight.dtype) and report["compile"] is False
    assert report["chosen"] in report["measured_tokens_per_s"] and settings.decoder is None
    monkeypatch.undo()
    settings = optimize_for_inference(model, dtype=None, compile=True)  # fixed: nothing measured
    assert settings.measured == {} and settings.decoder is not None
    assert settings.decoder.model is model


def test_the_choice_is_undone_exactly(model):
    idx = prompt(2, 9, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = generate(model, idx, 6)
    settings = optimize_for_inference(model, dtype=torch.bfloat16, compile=False)
    assert model.wte.weight.dtype == torch.bfloat16
    assert settings.undo() is model and settings.decoder is None
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # exact
    assert model.lm_head.weight is model.wte.weight  # still tied
    assert torch.equal(generate(model, idx, 6), tokens)
    settings = optimize_for_inference(model, dtype=None, compile=False)
    settings.chosen = Setting(transpose=True)  # as on a CPU that measured it faster
    transpose_weight_storage(model)
    settings.undo()
    assert model.h[0].attn.c_attn.weight.is_contiguous()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_transposed_weight_storage_changes_layout_not_results(model):
    idx = prompt(2, 9, 7)
    with torch.inference_mode():
        before, tokens = model(idx), generate(model, idx, 6)
    transpose_weight_storage(model)
    weight = model.h[0].attn.c_attn.weight
    assert weight.shape == (3 * CFG.emb_dim, CFG.emb_dim) and weight.stride() == (
        1,
        3 * CFG.emb_dim,
    )
    assert model.lm_head.weight is model.wte.weight  # still tied
    transpose_weight_storage(model)  # idempotent
    assert model.h[0].attn.c_attn.weight.stride() == (1, 3 * CFG.emb_dim)
    with torch.inference_mode():
        assert (model(idx) - before).abs().max().item() <= 1e-5
        assert torch.equal(generate(model, idx, 6), tokens)


def test_a_compiled_step_measured_on_the_model_is_kept_not_compiled_again(model, monkeypatch):
    import gpt2lib.fast as fast

    made = []

    def rate(trial, batch, decoder, new_tokens):  # stands in for timing: compiled is faster
        if decoder is not None:
            made.append(decoder)
        return 2.0 if decoder is not None else 1.0

    monkeypatch.setattr(fast, "candidates", lambda *a: [Setting(), Setting(compile=True)])
    monkeypatch.setattr(fast, "decode_rate", rate)
    settings = optimize_for_inference(model, batch_sizes=(1,))
    assert settings.chosen == Setting(compile=True)
    assert len(made) == 1 and settings.decoder is made[0]


def test_generate_takes_the_compiled_path_only_through_the_settings(model, monkeypatch):
    """What optimize_for_inference chose changes nothing of generate(): settings.generate uses it."""
    settings = optimize_for_inference(model, dtype=None, compile=True)

    def refuse(*args, **kwargs):
        raise AssertionError("the static path ran without being asked for")

    monkeypatch.setattr(StaticDecoder, "start", refuse)
    idx = prompt(1, 5, 9)
    assert generate(model, idx, 4).shape == (1, 9)  # the eager default, as its arguments say
    with pytest.raises(AssertionError, match="without being asked"):
        settings.generate(idx, 4)
