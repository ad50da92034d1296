"""gpt2lib.data.text: the two pretraining texts, sliding windows, splits and loaders."""

from __future__ import annotations

import pytest
import torch

from gpt2lib.data.text import (
    TEXTS,
    SlidingWindowDataset,
    create_dataloader,
    encode,
    load_text,
    load_tiny_shakespeare,
    load_verdict,
    num_windows,
    split_by_position,
)


@pytest.fixture(scope="module")
def verdict_ids() -> list[int]:
    return encode(load_verdict())


def test_verdict_golden_values(verdict_ids: list[int]) -> None:
    text = load_verdict()
    assert len(text) == 20_479
    assert text.startswith("I HAD always thought Jack Gisburn rather a cheap genius")
    assert len(verdict_ids) == 5145
    assert verdict_ids[:10] == [40, 367, 2885, 1464, 1807, 3619, 402, 271, 10899, 2138]


def test_tiny_shakespeare_golden_values() -> None:
    text = load_tiny_shakespeare()
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    assert len(encode(text)) == 338_025


def test_load_text_names_and_unknown() -> None:
    assert set(TEXTS) == {"the-verdict", "tiny-shakespeare"}
    assert load_text("the-verdict") == load_verdict()
    with pytest.raises(ValueError, match="unknown text 'moby-dick'"):
        load_text("moby-dick")


def test_windows_by_hand() -> None:
    ds = SlidingWindowDataset(list(range(10)), max_length=4, stride=4)
    assert len(ds) == 2  # starts 0 and 4; a start at 8 would need tokens up to 12
    x, y = ds[0]
    assert x.dtype == y.dtype == torch.long
    assert x.tolist() == [0, 1, 2, 3] and y.tolist() == [1, 2, 3, 4]
    assert [t.tolist() for t in ds[1]] == [[4, 5, 6, 7], [5, 6, 7, 8]]
    assert [t.tolist() for t in ds[-1]] == [[4, 5, 6, 7], [5, 6, 7, 8]]
    with pytest.raises(IndexError):
        ds[2]

    overlap = SlidingWindowDataset(torch.arange(10), max_length=4, stride=2)
    assert len(overlap) == 3
    assert [overlap[i][0].tolist() for i in range(3)] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]

    gaps = SlidingWindowDataset(range(20), max_length=3, stride=7)
    assert [gaps[i][0].tolist() for i in range(len(gaps))] == [[0, 1, 2], [7, 8, 9], [14, 15, 16]]

    exact = SlidingWindowDataset([7, 8, 9], max_length=2, stride=5)  # just one window fits
    assert len(exact) == 1 and [t.tolist() for t in exact[0]] == [[7, 8], [8, 9]]


@pytest.mark.parametrize("n", [5, 6, 17, 100, 257, 1000])
@pytest.mark.parametrize("max_length, stride", [(4, 1), (4, 4), (4, 3), (16, 8), (256, 256)])
def test_num_windows_matches_every_start(n: int, max_length: int, stride: int) -> None:
    starts = [s for s in range(0, n, stride) if s + max_length + 1 <= n]
    assert num_windows(n, max_length, stride) == len(starts)
    if starts:
        ds = SlidingWindowDataset(range(n), max_length, stride)
        assert len(ds) == len(starts)
        assert [ds[i][0][0].item() for i in range(len(ds))] == starts
        # every target is its input shifted by one
        x, y = ds[len(ds) - 1]
        assert torch.equal(x[1:], y[:-1]) and y[-1].item() == x[-1].item() + 1


def test_verdict_windows(verdict_ids: list[int]) -> None:
    ds = SlidingWindowDataset(verdict_ids, max_length=4, stride=1)
    assert len(ds) == 5145 - 4
    x, y = ds[0]
    assert x.tolist() == [40, 367, 2885, 1464]
    assert y.tolist() == [367, 2885, 1464, 1807]
    assert len(SlidingWindowDataset(verdict_ids, max_length=256, stride=128)) == 39


def test_book_split_of_the_verdict() -> None:
    # The book splits the characters 90/10 and tokenizes each part: 18 + 2 windows of 256.
    train_text, val_text = split_by_position(load_verdict(), train_ratio=0.9)
    assert (len(train_text), len(val_text)) == (18_431, 2_048)
    train_ids, val_ids = encode(train_text), encode(val_text)
    assert (len(train_ids), len(val_ids)) == (4612, 534)
    assert len(SlidingWindowDataset(train_ids, 256, 256)) == 18
    assert len(SlidingWindowDataset(val_ids, 256, 256)) == 2


def test_split_by_position_ids_and_errors() -> None:
    head, tail = split_by_position(list(range(10)), train_ratio=0.9)
    assert head == list(range(9)) and tail == [9]
    h, t = split_by_position(torch.arange(10), train_ratio=0.5)
    assert h.tolist() == [0, 1, 2, 3, 4] and t.tolist() == [5, 6, 7, 8, 9]
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="train_ratio"):
            split_by_position("abc", train_ratio=bad)


def test_dataset_errors() -> None:
    with pytest.raises(
        ValueError, match=r"4 tokens, fewer than one window needs \(max_length \+ 1 = 5\)"
    ):
        SlidingWindowDataset([1, 2, 3, 4], max_length=4, stride=1)
    with pytest.raises(ValueError, match="0 tokens"):
        SlidingWindowDataset([], max_length=4, stride=1)
    for stride in (0, -3):
        with pytest.raises(ValueError, match="stride must be positive"):
            SlidingWindowDataset(range(100), max_length=4, stride=stride)
    with pytest.raises(ValueError, match="max_length must be positive"):
        SlidingWindowDataset(range(100), max_length=0, stride=1)
    with pytest.raises(
        ValueError, match=r"max_length \(64\) exceeds the model's context_length \(32\)"
    ):
        SlidingWindowDataset(range(100), max_length=64, stride=1, context_length=32)
    assert len(SlidingWindowDataset(range(100), max_length=32, stride=32, context_length=32)) == 3
    with pytest.raises(TypeError, match="not a str"):
        SlidingWindowDataset("some text", max_length=2, stride=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="integers"):
        SlidingWindowDataset([0.5, 1.5, 2.5], max_length=1, stride=1)
    with pytest.raises(ValueError, match="one-dimensional"):
        SlidingWindowDataset(torch.zeros(2, 10, dtype=torch.long), max_length=2, stride=1)


def test_dataloader_in_order(verdict_ids: list[int]) -> None:
    loader = create_dataloader(verdict_ids, batch_size=2, max_length=256, stride=256, shuffle=False)
    assert len(loader) == 10  # 20 windows, batches of 2
    x, y = next(iter(loader))
    assert x.shape == y.shape == (2, 256) and x.dtype == torch.long
    assert x[0].tolist() == verdict_ids[:256] and x[1].tolist() == verdict_ids[256:512]
    assert y[0].tolist() == verdict_ids[1:257]
    # a text gives the same batches as its token IDs
    from_text = create_dataloader(load_verdict(), 2, 256, 256, shuffle=False)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(loader, from_text, strict=True)
    )


def test_dataloader_seeded_shuffle() -> None:
    ids = list(range(200))

    def order(seed: int) -> list[int]:
        loader = create_dataloader(ids, batch_size=3, max_length=4, stride=4, seed=seed)
        return [x[0].item() for xb, _ in loader for x in xb]

    first = order(123)
    torch.manual_seed(0)  # the global random state must not matter
    torch.rand(5)
    assert order(123) == first
    assert order(124) != first
    assert len(first) == 48 and sorted(first) != first  # 49 windows, last partial batch dropped
    assert set(first) <= set(range(0, 200, 4))


def test_dataloader_drop_last_and_batch_errors() -> None:
    with pytest.raises(ValueError, match="the loader would be empty"):
        create_dataloader(list(range(10)), batch_size=4, max_length=4, stride=4)
    loader = create_dataloader(list(range(10)), 4, 4, 4, shuffle=False, drop_last=False)
    assert [x.shape[0] for x, _ in loader] == [2]
    with pytest.raises(ValueError, match="batch_size"):
        create_dataloader(list(range(10)), batch_size=0, max_length=4, stride=4)
    with pytest.raises(ValueError, match="context_length"):
        create_dataloader(list(range(100)), 2, max_length=16, stride=4, context_length=8)
