"""Settings live in the chapters: the rehearsal's loop caps are a value a settings cell passes
on, and library functions do exactly what their arguments say, whatever the environment."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.classifier import add_classification_head, calc_accuracy_loader, predict_loader
from gpt2lib.generate import generate
from gpt2lib.loss import calc_loss_loader
from gpt2lib.train import NO_CAPS, REHEARSAL_CAPS, LoopCaps, TrainConfig, train

EVERY_SWITCH = {
    "GPT2LIB_PROFILE": "full",
    "GPT2LIB_REHEARSAL": "1",
    "GPT2LIB_MIRROR": "file:///nonexistent",
    "GPT2LIB_HOME": "/nonexistent",
}


def test_loop_caps_bound_counts() -> None:
    caps = REHEARSAL_CAPS
    assert caps == LoopCaps(steps=2, batches=2, new_tokens=4)
    assert caps.limit(100, "steps") == 2 and caps.limit(None, "batches") == 2
    assert caps.limit(1, "new_tokens") == 1
    assert NO_CAPS == LoopCaps()
    assert NO_CAPS.limit(100, "steps") == 100 and NO_CAPS.limit(None, "batches") is None


def _counting_loader(ids: torch.Tensor, seen: list[int], batch_size: int = 2) -> DataLoader:
    def collate(rows):
        seen.append(1)
        return tuple(torch.stack(t) for t in zip(*rows, strict=True))

    return DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=batch_size, collate_fn=collate)


def test_library_functions_do_what_their_arguments_say(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every GPT2LIB_* variable set (a rehearsal's among them), nothing is capped."""
    for name, value in EVERY_SWITCH.items():
        monkeypatch.setenv(name, value)
    torch.manual_seed(0)
    model = GPTModel(GPTConfig.tiny())
    ids = torch.randint(0, 100, (40, 9))
    loader = DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=2)  # 20 batches

    history = train(model, loader, loader, TrainConfig(epochs=1, eval_every=5, progress=False,
                                                       device="cpu", eval_batches=None))  # fmt: skip
    assert history.steps == [0, 5, 10, 15, 20]
    seen: list[int] = []
    calc_loss_loader(model, _counting_loader(ids, seen), "cpu", num_batches=5)
    assert len(seen) == 5
    seen.clear()
    calc_loss_loader(model, _counting_loader(ids, seen), "cpu")
    assert len(seen) == 20
    assert generate(model, ids[:1, :3], max_new_tokens=12).shape == (1, 3 + 12)

    head = add_classification_head(GPTModel(GPTConfig.tiny()), 2, method="all")
    labelled = DataLoader(
        TensorDataset(ids[:, :8], torch.randint(0, 2, (40,)), torch.full((40,), 8)), batch_size=4
    )  # 10 batches of (input_ids, labels, lengths)
    labels, _ = predict_loader(head, labelled, "cpu")
    assert len(labels) == 40
    labels, _ = predict_loader(head, labelled, "cpu", num_batches=3)
    assert len(labels) == 12
    assert 0.0 <= calc_accuracy_loader(head, labelled, "cpu", num_batches=7) <= 1.0


def test_a_rehearsal_caps_what_a_chapter_passes() -> None:
    """The chapters' pattern: counts capped in the settings cell, then passed as arguments."""
    caps = REHEARSAL_CAPS
    torch.manual_seed(0)
    model = GPTModel(GPTConfig.tiny())
    ids = torch.randint(0, 100, (40, 9))
    loader = DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=2)
    cfg = TrainConfig(epochs=1, max_steps=caps.limit(None, "steps"), eval_every=1,
                      eval_batches=caps.limit(5, "batches"), progress=False, device="cpu")  # fmt: skip
    assert train(model, loader, loader, cfg).steps == [0, 1, 2]
    seen: list[int] = []
    calc_loss_loader(model, _counting_loader(ids, seen), "cpu", caps.limit(None, "batches"))
    assert len(seen) == 2
    new_tokens = caps.limit(50, "new_tokens")
    assert generate(model, ids[:1, :3], max_new_tokens=new_tokens).shape == (1, 3 + 4)
