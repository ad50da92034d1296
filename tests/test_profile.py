"""gpt2lib.profile: the profile switch and the rehearsal's loop caps."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gpt2lib import GPTConfig, GPTModel
from gpt2lib.generate import generate
from gpt2lib.profile import REHEARSAL_CAPS, choose, get_profile, rehearsal, rehearsal_cap
from gpt2lib.train import TrainConfig, calc_loss_loader, train


def test_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPT2LIB_PROFILE", "full")
    assert get_profile() == "full" and choose(full=1, offline=2) == 1
    monkeypatch.setenv("GPT2LIB_PROFILE", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        get_profile()


def test_caps_only_in_a_rehearsal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPT2LIB_REHEARSAL", raising=False)
    assert (
        not rehearsal()
        and rehearsal_cap(100, "steps") == 100
        and rehearsal_cap(None, "batches") is None
    )
    monkeypatch.setenv("GPT2LIB_REHEARSAL", "0")
    assert not rehearsal()
    monkeypatch.setenv("GPT2LIB_REHEARSAL", "1")
    assert rehearsal() and rehearsal_cap(100, "steps") == REHEARSAL_CAPS["steps"]
    assert rehearsal_cap(None, "batches") == REHEARSAL_CAPS["batches"]
    assert rehearsal_cap(1, "new_tokens") == 1


def test_a_rehearsal_caps_steps_batches_and_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same calls, capped: two steps, two evaluation batches, four new tokens."""
    torch.manual_seed(0)
    model = GPTModel(GPTConfig.tiny())
    ids = torch.randint(0, 100, (40, 9))
    loader = DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=2)
    cfg = TrainConfig(epochs=1, eval_every=1, progress=False, device="cpu")
    seen: list[int] = []
    counting = DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=2, collate_fn=lambda b: (
        seen.append(1), tuple(torch.stack(t) for t in zip(*b, strict=True)))[1])  # fmt: skip

    monkeypatch.setenv("GPT2LIB_REHEARSAL", "1")
    assert train(model, loader, loader, cfg).steps == [0, 1, 2]  # 20 batches: capped at 2
    calc_loss_loader(model, counting, "cpu")
    assert len(seen) == REHEARSAL_CAPS["batches"]
    assert generate(model, ids[:1, :3], max_new_tokens=50).shape == (1, 3 + 4)

    monkeypatch.delenv("GPT2LIB_REHEARSAL")
    assert generate(model, ids[:1, :3], max_new_tokens=10).shape == (1, 13)
