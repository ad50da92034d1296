"""The key/value cache: what a decoder remembers between generation steps."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import GPTConfig


@dataclass
class KVCache:
    """Per-layer keys and values of the tokens seen so far; fill with :meth:`GPTModel.forward`."""

    keys: list[torch.Tensor]  # n_layers x (B, nh, max_len, hs)
    values: list[torch.Tensor]  # n_layers x (B, nh, max_len, hs)
    length: int = 0  # filled positions, the same in every layer

    @classmethod
    def empty(
        cls,
        cfg: GPTConfig,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``max_len`` (default: the context)."""
        max_len = cfg.context_length if max_len is None else max_len
        if batch_size <= 0 or not 0 < max_len <= cfg.context_length:
            raise ValueError(
                f"need batch_size > 0 and 0 < max_len <= context_length ({cfg.context_length}), "
                f"got batch_size={batch_size}, max_len={max_len}"
            )
        shape = (batch_size, cfg.n_heads, max_len, cfg.head_dim)
        return cls(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
        )

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer ``layer``'s new (B, nh, T, hs) keys and values after the cached ones.

        Returns views of all keys and values so far, (B, nh, length + T, hs). The new tokens are
        counted in :attr:`length` by :meth:`advance` once every layer has stored them.
        """
        start, T = self.length, k.shape[2]
        if start + T > self.max_len:
            raise ValueError(
                f"KV cache holds {self.max_len} positions: cannot add {T} to the {start} cached"
            )
        self.keys[layer][:, :, start : start + T] = k
        self.values[layer][:, :, start : start + T] = v
        return self.keys[layer][:, :, : start + T], self.values[layer][:, :, : start + T]

    def advance(self, n: int) -> None:
        """Count ``n`` tokens that every layer has stored (the model calls this after its layers)."""
        self.length += n

    def reset(self) -> None:
        """Forget everything (the tensors are kept and overwritten by the next prefill)."""
        self.length = 0
