"""LoRA: no-op at initialisation, merge/unmerge, frozen base, parity with peft, parameter counts."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.lora import (
    LinearWithLoRA,
    LoRALayer,
    LoRAReport,
    apply_lora,
    lora_modules,
    lora_parameter_count,
    lora_report,
    mark_only_lora_as_trainable,
    merge_lora,
    unmerge_lora,
)
from gpt2lib.params import gpt_parameter_count

TINY = GPTConfig.tiny()


def tiny_model(**overrides: object) -> GPTModel:
    torch.manual_seed(123)
    cfg = GPTConfig.tiny(**overrides)
    return GPTModel(cfg).eval()


def randomize_lora(model: nn.Module, seed: int = 0) -> None:
    """Give A and B random values so that the update is not zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_modules(model):
            layer.lora.A.copy_(torch.randn(layer.lora.A.shape, generator=gen) * 0.1)
            layer.lora.B.copy_(torch.randn(layer.lora.B.shape, generator=gen) * 0.1)


@pytest.fixture
def idx() -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))


def test_outputs_unchanged_at_initialisation(idx: torch.Tensor) -> None:
    model = tiny_model()
    with torch.no_grad():
        before = model(idx)
    names = apply_lora(model, rank=4, alpha=8)
    assert len(names) == 4 * TINY.n_layers + 1  # c_attn, attn.c_proj, c_fc, mlp.c_proj; lm_head
    assert "lm_head" in names and "h.1.mlp.c_proj" in names
    assert all(isinstance(model.get_submodule(n), LinearWithLoRA) for n in names)
    with torch.no_grad():
        after = model(idx)
    assert torch.equal(before, after)  # B = 0: the update is exactly zero


def test_init_of_a_and_b() -> None:
    torch.manual_seed(0)
    layer = LoRALayer(256, 96, rank=32, alpha=16)
    bound = 1 / math.sqrt(256)  # Kaiming-uniform, a=sqrt(5), fan_in = in_features
    assert layer.A.shape == (256, 32) and layer.B.shape == (32, 96)
    assert layer.A.abs().max() <= bound and layer.A.abs().max() > 0.95 * bound
    assert torch.count_nonzero(layer.B) == 0
    assert layer.scaling == 0.5


def test_merged_and_unmerged_outputs_agree(idx: torch.Tensor) -> None:
    model = tiny_model()
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    originals = {n: m.weight.detach().clone() for n, m in linears}
    with torch.no_grad():
        before = model(idx)
    apply_lora(model, rank=4, alpha=8)
    randomize_lora(model)
    with torch.no_grad():
        unmerged = model(idx)
    assert not torch.allclose(unmerged, before, atol=1e-3)  # the update does something
    c_attn = model.h[0].attn.c_attn
    expected = originals["h.0.attn.c_attn"] + 2.0 * (c_attn.lora.A @ c_attn.lora.B).T

    merge_lora(model)
    assert all(layer.merged for _, layer in lora_modules(model))
    torch.testing.assert_close(c_attn.linear.weight, expected)
    with torch.no_grad():
        merged = model(idx)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)

    snapshot = c_attn.linear.weight.detach().clone()
    merge_lora(model)  # idempotent: nothing added twice
    assert torch.equal(c_attn.linear.weight, snapshot)

    unmerge_lora(model)
    unmerge_lora(model)  # idempotent too
    assert not any(layer.merged for _, layer in lora_modules(model))
    for name, layer in lora_modules(model):
        torch.testing.assert_close(layer.linear.weight, originals[name], atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), unmerged, atol=1e-5, rtol=1e-5)


def test_base_frozen_after_optimizer_steps(idx: torch.Tensor) -> None:
    model = tiny_model()
    model.lm_head = nn.Linear(TINY.emb_dim, 2)  # a classification head, as in chapter 4
    apply_lora(model, rank=4, alpha=8)
    mark_only_lora_as_trainable(model)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora." not in n}
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora." in n}
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if n in lora)

    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(2):  # step 1 moves B (A's gradient is zero while B = 0), step 2 moves A too
        loss = model(idx)[:, -1].logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = dict(model.named_parameters())
    for name, before in frozen.items():
        assert params[name].grad is None
        assert torch.equal(params[name], before), name
    for name, before in lora.items():
        assert not torch.equal(params[name], before), name


def test_also_train_keeps_the_head_trainable() -> None:
    model = tiny_model()
    model.lm_head = nn.Linear(TINY.emb_dim, 2)
    apply_lora(model, rank=4, alpha=8, targets={"c_attn", "c_proj", "c_fc"})
    mark_only_lora_as_trainable(model, also_train=("lm_head",))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"lm_head.weight", "lm_head.bias"} <= trainable
    assert "h.0.attn.c_attn.linear.weight" not in trainable and "wte.weight" not in trainable
    report = lora_report(model)
    lora = lora_parameter_count([(32, 96), (32, 32), (32, 128), (128, 32)] * 2, rank=4)
    assert report == LoRAReport(
        total=sum(p.numel() for p in model.parameters()), trainable=lora + 66, lora=lora, layers=8
    )
    assert lora == 2 * 4 * (128 + 64 + 160 + 160) == 4_096
    assert str(report) == "trainable: 4,162 of 33,858 parameters (12.29%); LoRA: 4,096 in 8 layers"


def test_targets_by_name_suffix_and_predicate() -> None:
    names = apply_lora(tiny_model(), 2, 2, targets={"c_attn", "lm_head"})
    assert names == ["h.0.attn.c_attn", "h.1.attn.c_attn", "lm_head"]
    names = apply_lora(tiny_model(), 2, 2, targets=["mlp.c_proj"])
    assert names == ["h.0.mlp.c_proj", "h.1.mlp.c_proj"]
    names = apply_lora(tiny_model(), 2, 2, targets="c_proj")  # one name as a plain string
    assert names == ["h.0.attn.c_proj", "h.0.mlp.c_proj", "h.1.attn.c_proj", "h.1.mlp.c_proj"]
    names = apply_lora(tiny_model(), 2, 2, targets=lambda n, m: m.out_features == 4 * TINY.emb_dim)
    assert names == ["h.0.mlp.c_fc", "h.1.mlp.c_fc"]


def test_matches_peft_lora() -> None:
    import peft

    class OneLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(12, 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)

    torch.manual_seed(0)
    base = OneLinear()
    ours = LinearWithLoRA(copy.deepcopy(base.proj), rank=4, alpha=8)
    randomize_lora(ours)
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["proj"], lora_dropout=0.0, init_lora_weights=False
    )
    theirs = peft.get_peft_model(base, config)
    layer = theirs.base_model.model.proj
    with torch.no_grad():  # peft stores A as (r, in) and B as (out, r): the transposes of ours
        layer.lora_A["default"].weight.copy_(ours.lora.A.T)
        layer.lora_B["default"].weight.copy_(ours.lora.B.T)
    x = torch.randn(3, 5, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.lora.delta_weight(), layer.get_delta_weight("default"))
        ours.merge()
        layer.merge()
        torch.testing.assert_close(ours.linear.weight, layer.base_layer.weight, atol=1e-6, rtol=0)


def test_init_bound_matches_peft() -> None:
    import peft

    model = nn.Sequential(nn.Linear(400, 10))
    theirs = peft.get_peft_model(model, peft.LoraConfig(r=64, target_modules=["0"]))
    peft_a = theirs.base_model.model[0].lora_A["default"].weight  # (r, in)
    ours = LoRALayer(400, 10, rank=64, alpha=8).A  # (in, r)
    bound = 1 / math.sqrt(400)
    for a in (peft_a, ours):
        assert 0.98 * bound < a.abs().max() <= bound


def test_errors() -> None:
    for rank, alpha in [(0, 8), (-4, 8), (4, 0), (4, -1.0), (4, float("nan"))]:
        with pytest.raises(ValueError, match="rank|alpha"):
            LoRALayer(8, 8, rank, alpha)
        with pytest.raises(ValueError, match="rank|alpha"):
            apply_lora(tiny_model(), rank, alpha)
    with pytest.raises(TypeError, match="rank must be an int"):
        LoRALayer(8, 8, 2.0, 8)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wraps an nn.Linear"):
        LinearWithLoRA(nn.Conv1d(4, 4, 1), 2, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already carries LoRA"):
        LinearWithLoRA(LinearWithLoRA(nn.Linear(4, 4), 2, 2), 2, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be positive"):
        lora_parameter_count([(4, 4)], 0)

    model = tiny_model()
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(model)
    with pytest.raises(ValueError, match="no LoRA layers"):
        mark_only_lora_as_trainable(model)
    with pytest.raises(ValueError, match=r"no nn.Linear named \['c_atn'\]"):
        apply_lora(model, 4, 8, targets={"c_atn", "c_fc"})
    with pytest.raises(ValueError, match="selected no nn.Linear"):
        apply_lora(model, 4, 8, targets=lambda n, m: False)
    assert not any(True for _ in lora_modules(model))  # failed calls changed nothing
    apply_lora(model, 4, 8)
    with pytest.raises(ValueError, match="already holds LoRA"):
        apply_lora(model, 4, 8)
    with pytest.raises(ValueError, match=r"also_train names no module.*'head'"):
        mark_only_lora_as_trainable(model, also_train=("head",))


def test_merging_a_tied_head_is_refused() -> None:
    model = tiny_model(tie_embeddings=True)
    apply_lora(model, 4, 8, targets={"lm_head"})
    assert model.lm_head.linear.weight is model.wte.weight  # still tied after wrapping
    with pytest.raises(ValueError, match="lm_head.linear.weight is shared"):
        merge_lora(model)
    assert not model.lm_head.merged


# --- parameter counts: the book's 2,666,528 and ours --------------------------------------------

RANK = 16
C = 768
BOOK_HEAD = (C, 2)  # the 2-class head, nn.Linear(768, 2) with bias


@pytest.fixture(scope="module")
def gpt2_124m_classifier() -> GPTModel:
    """The 124M shape with a 2-class head, on the meta device: shapes only, no memory, instant."""
    with torch.device("meta"):
        model = GPTModel(GPTConfig.gpt2("124M"))
        model.lm_head = nn.Linear(*BOOK_HEAD)
    return model


def book_linear_shapes(n_layers: int = 12) -> list[tuple[int, int]]:
    """Raschka's GPTModel: W_query, W_key, W_value, out_proj, ff 768->3072->768 per block; head."""
    block = [(C, C)] * 3 + [(C, C), (C, 4 * C), (4 * C, C)]
    return block * n_layers + [BOOK_HEAD]


def test_book_lora_parameter_count() -> None:
    assert lora_parameter_count(book_linear_shapes(), RANK) == 2_666_528


def test_our_lora_parameter_count(gpt2_124m_classifier: GPTModel) -> None:
    model = copy.deepcopy(gpt2_124m_classifier)
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    names = apply_lora(model, rank=RANK, alpha=16)
    mark_only_lora_as_trainable(model)
    report = lora_report(model)
    assert len(names) == report.layers == 4 * 12 + 1
    assert report.lora == report.trainable == lora_parameter_count(shapes, RANK) == 2_371_616
    body = gpt_parameter_count(GPTConfig.gpt2("124M"), tied=True)  # 124,439,808, no vocab head
    assert report.total == body + (C * 2 + 2) + 2_371_616  # + 2-class head + LoRA
    # fused c_attn (768 -> 2304) gives 16 * (768 + 2304) = 49,152 per block; three separate
    # 768 -> 768 projections give 3 * 16 * (768 + 768) = 73,728: 24,576 more, times 12 blocks
    fused, separate = RANK * (C + 3 * C), 3 * RANK * (C + C)
    assert (fused, separate) == (49_152, 73_728)
    assert 2_666_528 - report.lora == 12 * (separate - fused) == 294_912
