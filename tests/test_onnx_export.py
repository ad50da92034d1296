"""export_onnx: the ONNX file computes what the PyTorch model computes (ONNX Runtime, fp32)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.classifier import add_classification_head
from gpt2lib.model import attention_weights
from gpt2lib.onnx_export import export_onnx

CFG = GPTConfig(vocab_size=100, context_length=24, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


def model(tie: bool) -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(dataclasses.replace(CFG, tie_embeddings=tie)).eval()


def run(path, ids: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids.numpy()})


@pytest.mark.parametrize("tie", [True, False])
def test_logits_equal_pytorch_at_every_length(tmp_path, tie):
    m = model(tie)
    path = export_onnx(m, tmp_path / "m.onnx")
    for T in (1, 5, CFG.context_length):  # the length is dynamic: one file serves them all
        ids = torch.randint(0, CFG.vocab_size, (1, T))
        (logits,) = run(path, ids)
        assert logits.shape == (1, T, CFG.vocab_size)
        np.testing.assert_allclose(logits, m(ids).detach().numpy(), atol=1e-4, rtol=0)
    assert not (tmp_path / "m.onnx").with_name("m.onnx.data").exists()  # one self-contained file


def test_tied_embedding_is_stored_once(tmp_path):
    for tie, expected in ((True, 1), (False, 2)):
        graph = onnx.load(str(export_onnx(model(tie), tmp_path / f"{tie}.onnx"))).graph
        tables = ([CFG.vocab_size, CFG.emb_dim], [CFG.emb_dim, CFG.vocab_size])  # either layout
        vocab_tables = [i for i in graph.initializer if list(i.dims) in tables]
        assert len(vocab_tables) == expected


def test_attention_weights_equal_pytorch(tmp_path):
    m = model(True)
    path = export_onnx(m, tmp_path / "m.onnx", attention=True)
    ids = torch.randint(0, CFG.vocab_size, (1, 9))
    logits, attention = run(path, ids)
    assert attention.shape == (CFG.n_layers, 1, CFG.n_heads, 9, 9)
    np.testing.assert_allclose(attention, attention_weights(m, ids).numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits, m(ids).detach().numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)  # each query's weights sum to 1


@pytest.mark.parametrize("method", [None, "lora"])
def test_classifier_exports_its_class_logits(tmp_path, method):
    m = model(True)
    add_classification_head(m, num_classes=2, method=method, rank=2, alpha=4)
    if method == "lora":  # as if trained: B is zero at first, and the update would vanish
        lora_b = [p for name, p in m.named_parameters() if name.endswith("lora.B")]
        assert lora_b
        with torch.no_grad():
            for p in lora_b:
                p.normal_(0.0, 0.1)
    m.eval()
    ids = torch.randint(0, CFG.vocab_size, (1, 11))
    (logits,) = run(export_onnx(m, tmp_path / "spam.onnx"), ids)
    assert logits.shape == (1, 11, 2)
    np.testing.assert_allclose(logits, m(ids).detach().numpy(), atol=1e-4, rtol=0)


def test_export_leaves_the_model_as_it_was(tmp_path):
    m = model(True).train()
    export_onnx(m, tmp_path / "m.onnx")
    assert m.training


def test_bad_input_is_named(tmp_path):
    with pytest.raises(TypeError, match="needs a GPTModel, got Linear"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="float32 model"):
        export_onnx(model(True).to(torch.bfloat16), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_float16_weights_halve_the_file_and_compute_in_float32(tmp_path):
    m = model(True)
    full = export_onnx(m, tmp_path / "32.onnx")
    half = export_onnx(m, tmp_path / "16.onnx", weights="float16")
    weights = {path: onnx.load(str(path)).graph.initializer for path in (full, half)}
    assert sum(len(i.raw_data) for i in weights[half]) * 2 == sum(len(i.raw_data) for i in weights[full])
    assert {i.data_type for i in weights[half]} == {onnx.TensorProto.FLOAT16}
    assert half.stat().st_size < full.stat().st_size
    ids = torch.randint(0, CFG.vocab_size, (1, 13))
    (logits,) = run(half, ids)
    rounded = model(True).half().float()  # the same weights, rounded as the file stores them
    np.testing.assert_allclose(logits, rounded(ids).detach().numpy(), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="weights must be 'float32', 'float16', 'float16-exact' or 'int8'"):
        export_onnx(m, tmp_path / "x.onnx", weights="int4")


def test_float16_exact_keeps_what_float16_would_round(tmp_path):
    m = model(True).half().float()  # every weight representable in float16, as the mini model's
    add_classification_head(m, num_classes=2, method="lora", rank=2, alpha=4)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("lora.B"):
                p.normal_(0.0, 0.1)  # trained on top, in float32: float16 would round these
    m.eval()
    path = export_onnx(m, tmp_path / "exact.onnx", weights="float16-exact")
    stored = {i.name: i.data_type for i in onnx.load(str(path)).graph.initializer}
    assert stored["model.wte.weight.float16"] == onnx.TensorProto.FLOAT16
    assert {t for n, t in stored.items() if ".lora." in n and n.endswith("B")} == {onnx.TensorProto.FLOAT}
    ids = torch.randint(0, CFG.vocab_size, (1, 9))
    (logits,) = run(path, ids)
    np.testing.assert_allclose(logits, m(ids).detach().numpy(), atol=1e-5, rtol=0)


def test_int8_stores_each_matrix_in_a_byte_per_number_with_a_scale_per_row(tmp_path):
    m = model(True)
    with torch.no_grad():
        m.h[0].mlp.c_fc.weight[3].zero_()  # a row of zeros stays zeros
    path = export_onnx(m, tmp_path / "8.onnx", weights="int8")
    stored = {i.name: i for i in onnx.load(str(path)).graph.initializer}
    int8 = {n.removesuffix(".int8"): list(i.dims) for n, i in stored.items() if i.data_type == onnx.TensorProto.INT8}
    matrices = [list(p.shape) for p in m.parameters() if p.ndim == 2]  # the tied table once
    assert sorted(int8.values()) == sorted(matrices)
    for name, dims in int8.items():
        assert list(stored[f"{name}.scale"].dims) == [dims[0], 1]
    assert all(i.data_type != onnx.TensorProto.FLOAT or len(i.dims) < 2 or i.name.endswith(".scale")
               for i in stored.values())  # fmt: skip
    # the file computes, in float32, what the model computes with its matrices rounded so
    rounded = model(True)
    with torch.no_grad():
        rounded.h[0].mlp.c_fc.weight[3].zero_()
        for p in rounded.parameters():
            if p.ndim == 2:
                scale = p.abs().amax(1, keepdim=True) / 127
                scale[scale == 0] = 1.0
                p.copy_((p / scale).round().clamp(-127, 127) * scale)
    ids = torch.randint(0, CFG.vocab_size, (1, 11))
    (logits,) = run(path, ids)
    np.testing.assert_allclose(logits, rounded(ids).detach().numpy(), atol=1e-4, rtol=0)
    full = onnx.load(str(export_onnx(m, tmp_path / "32.onnx"))).graph.initializer
    assert sum(len(i.raw_data) for i in stored.values()) < 0.35 * sum(len(i.raw_data) for i in full)


def test_int8_on_a_base_stores_the_difference(tmp_path):
    """A fine-tuned model as its base's float16 weights plus an int8 difference: the file computes
    what the model computes with each difference rounded so, closer than int8 on its own."""
    base = model(True).half().float()  # a base saved in float16, as the mini model is
    tuned = model(True).half().float()
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.002 * torch.randn_like(p))  # fine-tuning moves every weight a little
    path = export_onnx(tuned, tmp_path / "delta.onnx", weights="int8", base=base)
    stored = {i.name: i.data_type for i in onnx.load(str(path)).graph.initializer}
    assert stored["model.lm_head.weight.base"] == onnx.TensorProto.FLOAT16
    assert stored["model.lm_head.weight.int8"] == onnx.TensorProto.INT8
    rounded = model(True).half().float()
    with torch.no_grad():
        for p, b, t in zip(rounded.parameters(), base.parameters(), tuned.parameters(), strict=True):
            if p.ndim == 2:
                delta = t - b
                scale = delta.abs().amax(1, keepdim=True) / 127
                p.copy_(b + (delta / scale).round().clamp(-127, 127) * scale)
            else:
                p.copy_(t)
    ids = torch.randint(0, CFG.vocab_size, (1, 10))
    (logits,) = run(path, ids)
    np.testing.assert_allclose(logits, rounded(ids).detach().numpy(), atol=1e-4, rtol=0)
    (alone,) = run(export_onnx(tuned, tmp_path / "alone.onnx", weights="int8"), ids)
    exact = tuned(ids).detach().numpy()
    assert abs(logits - exact).max() < abs(alone - exact).max() / 4
    with pytest.raises(ValueError, match="base needs weights='int8'"):
        export_onnx(tuned, tmp_path / "x.onnx", weights="float16", base=base)
    other = GPTModel(dataclasses.replace(CFG, emb_dim=16, n_heads=2)).eval()
    with pytest.raises(ValueError, match="base has no weight model.wpe.weight of shape"):
        export_onnx(tuned, tmp_path / "x.onnx", weights="int8", base=other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.onnx", "delta.onnx"]


PROMPTS = [
    "ROMEO:\n", "JULIET:\nO", "First Citizen:\n", "KING HENRY:\nNow, my lords,", "To be, or not",
    "MENENIUS:\nWhat", "The king is", "O, what a", "Good morrow", "I pray you, sir,",
    "HAMLET:\n", "What news", "My lord,", "Come, come,", "Alas, poor", "If music be",
    "LADY MACBETH:\n", "Shall I", "Now is the winter", "Friends, Romans,",
]


def test_the_mini_model_in_float16_decodes_the_tokens_pytorch_does(tmp_path):
    """The site's encoding of the committed mini GPT-2: greedy tokens equal on 20 prompts x 32
    new tokens, and the top-1 token agrees at (at least 99 % of) every position."""
    from gpt2lib.generate import generate
    from gpt2lib.mini import load_mini
    from gpt2lib.tokenizer import get_tokenizer

    mini, tokenizer = load_mini(), get_tokenizer()
    session = ort.InferenceSession(
        str(export_onnx(mini, tmp_path / "mini.onnx", weights="float16")),
        providers=["CPUExecutionProvider"],
    )
    agree = total = 0
    for prompt in PROMPTS:
        ids = np.array([tokenizer.encode(prompt)])
        for _ in range(32):
            (logits,) = session.run(["logits"], {"input_ids": ids})
            ids = np.concatenate([ids, logits[:, -1:].argmax(-1)], axis=1)
        expected = generate(mini, torch.tensor([tokenizer.encode(prompt)]), 32)
        assert ids.tolist() == expected.tolist(), prompt
        (logits,) = session.run(["logits"], {"input_ids": ids})
        agree += int((logits.argmax(-1) == mini(torch.tensor(ids)).argmax(-1).numpy()).sum())
        total += ids.shape[1]
    assert agree / total >= 0.99


def test_the_last_position_alone(tmp_path):
    m = model(True)
    path = export_onnx(m, tmp_path / "last.onnx", attention=True, positions="last")
    ids = torch.randint(0, CFG.vocab_size, (1, 7))
    logits, attention = run(path, ids)
    assert logits.shape == (1, 1, CFG.vocab_size)
    np.testing.assert_allclose(logits[0, 0], m(ids)[0, -1].detach().numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(attention, attention_weights(m, ids).numpy(), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="positions must be 'all' or 'last'"):
        export_onnx(m, tmp_path / "x.onnx", positions="first")
