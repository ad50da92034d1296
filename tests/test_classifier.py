"""Classification head, freezing methods, pooling, loss/accuracy, confusion matrix, classify."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.classifier import (
    accuracy_eval,
    add_classification_head,
    calc_accuracy_loader,
    class_logits,
    classification_loss,
    classify,
    confusion_matrix,
    freeze_all_but_last_block,
    num_classes_of,
    predict_loader,
)
from gpt2lib.lora import LinearWithLoRA, lora_parameter_count, lora_report
from gpt2lib.train import TrainConfig, train

TINY = GPTConfig.tiny()
PAD = 99


def tiny_model(**overrides: object) -> GPTModel:
    torch.manual_seed(123)
    return GPTModel(GPTConfig.tiny(**overrides)).eval()


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def padded_batch(seqs: list[list[int]], T: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(seqs), T), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, torch.tensor([len(s) for s in seqs])


class CharTokenizer:
    """Enough of tiktoken's interface for classify: one ID per character."""

    def encode(self, text: str, disallowed_special: object = ()) -> list[int]:
        return [ord(c) % 90 for c in text]


# --- the head and what trains ---------------------------------------------------------------


def test_head_replaces_lm_head_and_unties() -> None:
    model = tiny_model(tie_embeddings=True)
    assert model.lm_head.weight is model.wte.weight
    add_classification_head(model, num_classes=3)
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.bias is not None
    assert model.lm_head.weight.shape == (3, TINY.emb_dim)
    assert model.wte.weight.shape == (TINY.vocab_size, TINY.emb_dim)  # embedding untouched
    assert num_classes_of(model) == 3
    assert model(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 3)
    assert trainable(model) == {n for n, _ in model.named_parameters()}  # method=None: no change


def test_lora_method_trains_only_lora_and_counts_match() -> None:
    model = add_classification_head(tiny_model(), 2, method="lora", rank=4, alpha=8)
    assert isinstance(model.lm_head, LinearWithLoRA)  # the head carries LoRA too (the book's way)
    names = trainable(model)
    assert names and all(".lora." in n for n in names)
    C = TINY.emb_dim
    shapes = [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)] * TINY.n_layers + [(C, 2)]
    assert lora_report(model).trainable == lora_parameter_count(shapes, rank=4)


def test_lora_method_with_head_outside_targets_trains_the_head_directly() -> None:
    model = add_classification_head(
        tiny_model(), 2, method="lora", rank=2, alpha=2, lora_targets={"c_attn"}
    )
    names = trainable(model)
    assert {"lm_head.weight", "lm_head.bias"} <= names
    assert all(".lora." in n or n.startswith("lm_head.") for n in names)


def test_book_lora_count_for_124m_fused_qkv() -> None:
    # rank 16 on every linear layer of GPT-2 124M plus a 2-class head, counted without building:
    # fused c_attn (768 -> 2304) instead of three 768 -> 768 projections
    C = 768
    shapes = [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)] * 12 + [(C, 2)]
    assert lora_parameter_count(shapes, rank=16) == 2_371_616
    separate = [(C, C)] * 3 + [(C, C), (C, 4 * C), (4 * C, C)]
    assert lora_parameter_count(separate * 12 + [(C, 2)], rank=16) == 2_666_528


def test_freeze_all_but_last_block() -> None:
    model = add_classification_head(tiny_model(), 2, method="last_block")
    last = TINY.n_layers - 1
    expected = {
        n for n, _ in model.named_parameters() if n.startswith((f"h.{last}.", "ln_f.", "lm_head."))
    }
    assert trainable(model) == expected
    assert not any(n.startswith(("h.0.", "wte", "wpe")) for n in trainable(model))
    assert freeze_all_but_last_block(model) is model


def test_all_method_trains_everything() -> None:
    model = tiny_model()
    model.requires_grad_(False)
    add_classification_head(model, 2, method="all")
    assert trainable(model) == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"num_classes": 2.0}, ValueError, "num_classes"),
        ({"method": "head"}, ValueError, "unknown method"),
        ({"method": "lora", "rank": 0}, ValueError, "rank"),
    ],
)
def test_head_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        add_classification_head(tiny_model(), **kwargs)


def test_head_needs_a_gpt_model() -> None:
    with pytest.raises(TypeError, match="GPTModel"):
        add_classification_head(nn.Linear(2, 2))  # type: ignore[arg-type]


# --- pooling ---------------------------------------------------------------------------------


def test_last_real_pool_ignores_right_padding() -> None:
    model = add_classification_head(tiny_model(), 2)
    seqs = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8], [9]]
    ids, lengths = padded_batch(seqs)
    with torch.no_grad():
        pooled = class_logits(model, ids, lengths, pool="last_real")
        alone = torch.cat([model(torch.tensor([s]))[:, -1] for s in seqs])
        last = class_logits(model, ids, pool="last")
    assert pooled.shape == (3, 2)
    torch.testing.assert_close(pooled, alone, rtol=1e-5, atol=1e-6)  # as if unpadded
    torch.testing.assert_close(last, model(ids)[:, -1].detach())
    assert not torch.allclose(last[0], alone[0])  # the pad position sees the pads


def test_last_real_pool_needs_valid_lengths() -> None:
    model = add_classification_head(tiny_model(), 2)
    ids, _ = padded_batch([[1, 2], [3]])
    with pytest.raises(ValueError, match="return_length=True"):
        class_logits(model, ids)
    with pytest.raises(ValueError, match="lengths"):
        class_logits(model, ids, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="lengths"):
        class_logits(model, ids, torch.tensor([13, 1]))
    with pytest.raises(ValueError, match="unknown pool"):
        class_logits(model, ids, pool="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch, tokens"):
        class_logits(model, ids[0])


# --- loss, accuracy, confusion matrix ---------------------------------------------------------


def test_classification_loss_is_cross_entropy_at_the_pooled_position() -> None:
    model = add_classification_head(tiny_model(), 2, method="lora", rank=2, alpha=2)
    ids, lengths = padded_batch([[5, 6, 7], [1, 2, 3, 4]])
    labels = torch.tensor([1, 0])
    loss = classification_loss(model, (ids, labels, lengths), "cpu")
    expected = F.cross_entropy(class_logits(model, ids, lengths), labels)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and grads <= trainable(model)  # frozen weights get no gradient
    loss_last = classification_loss(model, (ids, labels), "cpu", pool="last")
    torch.testing.assert_close(loss_last, F.cross_entropy(model(ids)[:, -1], labels))
    with pytest.raises(TypeError, match="classification batch"):
        classification_loss(model, ids, "cpu")


def _loader(n: int = 10, batch_size: int = 4) -> DataLoader:
    gen = torch.Generator().manual_seed(7)
    lengths = torch.randint(1, 9, (n,), generator=gen)
    ids = torch.randint(0, 90, (n, 8), generator=gen)
    ids[torch.arange(8) >= lengths[:, None]] = PAD
    labels = torch.randint(0, 2, (n,), generator=gen)
    return DataLoader(TensorDataset(ids, labels, lengths), batch_size=batch_size)


def test_accuracy_matches_argmax_and_restores_mode() -> None:
    model = add_classification_head(tiny_model(), 2)
    loader = _loader()
    labels, preds = predict_loader(model, loader, "cpu")
    assert labels.shape == preds.shape == (10,)
    expected = (labels == preds).float().mean().item()
    model.train()
    assert calc_accuracy_loader(model, loader, "cpu") == pytest.approx(expected)
    assert model.training  # mode restored
    assert accuracy_eval(model, loader, "cpu") == {"accuracy": pytest.approx(expected)}
    first = next(iter(loader))
    assert calc_accuracy_loader(model, loader, "cpu", num_batches=1) == pytest.approx(
        accuracy_eval(model, [first], "cpu")["accuracy"]
    )
    with pytest.raises(ValueError, match="num_batches"):
        calc_accuracy_loader(model, loader, "cpu", num_batches=0)


def test_confusion_matrix_golden() -> None:
    cm = confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0])
    assert cm.tolist() == [[1, 1], [1, 2]]  # rows: true ham, true spam; columns: predicted
    assert confusion_matrix(torch.tensor([1]), torch.tensor([1]), num_classes=3).tolist() == [
        [0, 0, 0],
        [0, 1, 0],
        [0, 0, 0],
    ]
    assert int(cm.sum()) == 5
    with pytest.raises(ValueError, match="labels but"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match=">= 0"):
        confusion_matrix([0, -1], [0, 1])
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(torch.tensor([0.0]), torch.tensor([0.0]))


# --- classify ----------------------------------------------------------------------------------


def test_classify_agrees_with_batched_logits() -> None:
    model = add_classification_head(tiny_model(), 2)
    tok = CharTokenizer()
    texts = ["win a prize now", "see you at noon", "ok"]
    seqs = [tok.encode(t) for t in texts]
    ids, lengths = padded_batch(seqs, T=16)
    with torch.no_grad():
        expected = class_logits(model, ids, lengths).argmax(-1).tolist()
        expected_last = class_logits(model, ids, pool="last").argmax(-1).tolist()
    labels = ("ham", "spam")
    assert [classify(t, model, tok) for t in texts] == [labels[i] for i in expected]
    got = [classify(t, model, tok, max_length=16, pool="last", pad_token_id=PAD) for t in texts]
    assert got == [labels[i] for i in expected_last]
    assert classify("x" * 100, model, tok) in labels  # longer than the context: truncated


def test_classify_rejects_bad_input() -> None:
    model = add_classification_head(tiny_model(), 2)
    tok = CharTokenizer()
    with pytest.raises(ValueError, match="non-empty"):
        classify("  ", model, tok)
    with pytest.raises(ValueError, match="3 labels"):
        classify("hi", model, tok, labels=("a", "b", "c"))
    with pytest.raises(ValueError, match="max_length"):
        classify("hi", model, tok, max_length=TINY.context_length + 1)


# --- with the training loop ----------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["last_real", "last"])
def test_lora_classifier_learns_a_separable_task(pool: str) -> None:
    """Class 1 iff token 7 occurs: LoRA + head learn it through gpt2lib.train.train."""
    gen = torch.Generator().manual_seed(0)
    n, T = 64, 10
    lengths = torch.randint(3, T + 1, (n,), generator=gen)
    ids = torch.randint(10, 90, (n, T), generator=gen)
    labels = torch.arange(n) % 2
    pos = (torch.rand(n, generator=gen) * (lengths - 1)).long()
    ids[labels == 1, pos[labels == 1]] = 7
    ids[torch.arange(T) >= lengths[:, None]] = PAD
    loader = DataLoader(TensorDataset(ids, labels, lengths), batch_size=16, shuffle=True)
    # rank 8: with GPT-2's scaled residual init the frozen random base passes a weaker signal
    model = add_classification_head(tiny_model(), 2, method="lora", rank=8, alpha=16)
    before = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    cfg = TrainConfig(
        epochs=12, lr=1e-2, schedule="constant", eval_every=1000, eval_batches=None,
        progress=False, device="cpu", weight_decay=0.0,
    )  # fmt: skip
    history = train(
        model,
        loader,
        loader,
        cfg,
        loss_fn=functools.partial(classification_loss, pool=pool),
        eval_fn=functools.partial(accuracy_eval, pool=pool),
    )
    assert history.val_loss[-1] < history.val_loss[0]
    assert history.metrics["val_accuracy"][-1] >= 0.9
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
