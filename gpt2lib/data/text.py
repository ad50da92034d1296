"""Unlabeled text for pretraining: two public-domain texts and a sliding-window data set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

from ..download import fetch

if TYPE_CHECKING:
    import tiktoken


@dataclass(frozen=True)
class TextSource:
    """A text the book downloads: its canonical URL, sha256 and size in bytes."""

    url: str
    sha256: str
    size: int


TEXTS: dict[str, TextSource] = {
    # Edith Wharton, "The Verdict" (1908): the short story the book pretrains on; 5,145 tokens
    "the-verdict": TextSource(
        "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/"
        "01_main-chapter-code/the-verdict.txt",
        "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
        20_479,
    ),
    # Karpathy's Tiny Shakespeare (char-rnn): 40,000 lines of the plays; 338,025 tokens
    "tiny-shakespeare": TextSource(
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        1_115_394,
    ),
}

TokenIds = Sequence[int] | torch.Tensor
S = TypeVar("S", str, Sequence[int], torch.Tensor)


def load_text(name: str) -> str:
    """Download (once, sha256-checked) and return one of :data:`TEXTS` as a string."""
    if name not in TEXTS:
        raise ValueError(f"unknown text {name!r}; available: {', '.join(TEXTS)}")
    src = TEXTS[name]
    path = fetch(src.url, sha256=src.sha256, size=src.size)
    return path.read_text(encoding="utf-8")


def load_verdict() -> str:
    """Edith Wharton's *The Verdict* (20,479 characters, 5,145 GPT-2 tokens)."""
    return load_text("the-verdict")


def load_tiny_shakespeare() -> str:
    """Tiny Shakespeare (1,115,394 characters, 338,025 GPT-2 tokens)."""
    return load_text("tiny-shakespeare")


def encode(text: str, tokenizer: tiktoken.Encoding | None = None) -> list[int]:
    """GPT-2 token IDs of ``text``; a literal ``<|endoftext|>`` in it becomes token 50256."""
    if tokenizer is None:
        from ..tokenizer import get_tokenizer

        tokenizer = get_tokenizer()
    return tokenizer.encode(text, allowed_special={"<|endoftext|>"})


def split_by_position(data: S, train_ratio: float = 0.9) -> tuple[S, S]:
    """Split a text (by characters, as the book does) or a token sequence into a head and a tail.

    The first ``int(train_ratio * len(data))`` elements train, the rest validate; nothing is
    shuffled, so the validation part is text the model has never seen in any window.
    """
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be strictly between 0 and 1, got {train_ratio}")
    cut = int(train_ratio * len(data))
    return data[:cut], data[cut:]


def _as_token_tensor(token_ids: TokenIds) -> torch.Tensor:
    if isinstance(token_ids, str):
        raise TypeError("token_ids must be token IDs, not a str; tokenize the text first")
    ids = torch.as_tensor(token_ids)
    if ids.ndim != 1:
        raise ValueError(f"token_ids must be one-dimensional, got shape {tuple(ids.shape)}")
    if ids.numel() and (ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool):
        raise TypeError(f"token_ids must be integers, got dtype {ids.dtype}")
    return ids.to(torch.long)


def num_windows(n_tokens: int, max_length: int, stride: int) -> int:
    """How many windows :class:`SlidingWindowDataset` cuts from ``n_tokens`` tokens.

    A window starting at ``s`` needs tokens ``s .. s + max_length`` (its target reaches one
    further), so the starts are ``0, stride, 2 * stride, ...`` up to ``n_tokens - max_length - 1``.
    """
    if n_tokens <= max_length:
        return 0
    return (n_tokens - max_length - 1) // stride + 1


class SlidingWindowDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Windows of ``max_length`` token IDs, ``stride`` apart, each with its next-token targets.

    Item ``i`` is ``(inputs, targets)``, two ``long`` tensors of shape ``(max_length,)`` with
    ``targets[j] == inputs[j + 1]``. Windows overlap when ``stride < max_length`` and skip
    tokens when ``stride > max_length``. Windows are views of one tensor, so stride 1 over a
    long text costs no extra memory.
    """

    def __init__(
        self,
        token_ids: TokenIds,
        max_length: int,
        stride: int,
        context_length: int | None = None,
    ) -> None:
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        if stride <= 0:
            raise ValueError(f"stride must be positive, got {stride}")
        if context_length is not None and max_length > context_length:
            raise ValueError(
                f"max_length ({max_length}) exceeds the model's context_length ({context_length})"
            )
        self.token_ids = _as_token_tensor(token_ids)
        n = len(self.token_ids)
        if n < max_length + 1:
            raise ValueError(
                f"the text has {n} tokens, fewer than one window needs "
                f"(max_length + 1 = {max_length + 1})"
            )
        self.max_length = max_length
        self.stride = stride

    def __len__(self) -> int:
        return num_windows(len(self.token_ids), self.max_length, self.stride)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"window {index} out of range for {n} windows")
        start = index * self.stride
        inputs = self.token_ids[start : start + self.max_length]
        targets = self.token_ids[start + 1 : start + self.max_length + 1]
        return inputs, targets


def create_dataloader(
    data: str | TokenIds,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
    context_length: int | None = None,
    tokenizer: tiktoken.Encoding | None = None,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """A :class:`~torch.utils.data.DataLoader` of sliding windows over ``data``.

    ``data`` is a text (tokenized with GPT-2's tokenizer, or ``tokenizer``) or token IDs.
    Batches are ``(inputs, targets)`` of shape ``(batch_size, max_length)``. With ``seed`` the
    shuffling order comes from its own ``torch.Generator`` and is the same on every run,
    whatever else has drawn from the global random state.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    ids = encode(data, tokenizer) if isinstance(data, str) else data
    dataset = SlidingWindowDataset(ids, max_length, stride, context_length=context_length)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"only {len(dataset)} windows but batch_size={batch_size} with drop_last=True: "
            "the loader would be empty; use a longer text, a smaller batch or drop_last=False"
        )
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
    )
