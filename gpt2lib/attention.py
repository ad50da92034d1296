"""Self-attention as GPT-2 uses it: the fused multi-head layer, masks, attention weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GPTConfig
from .kv_cache import KVCache


def causal_mask(
    T: int,
    S: int,
    key_mask: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean attention mask, True where a query may look at a key.

    Query ``i`` of ``T`` sits at key position ``S - T + i`` (the last ``T`` of ``S`` keys, as after
    a KV cache) and sees keys up to its own: shape (T, S). With ``key_mask`` (B, S), False at
    padding, padding keys are hidden too and the mask is (B, 1, T, S), broadcasting over heads.
    A query always sees its own key, so that a padding query's softmax stays finite (its
    output is never used).
    """
    query_pos = torch.arange(S - T, S, device=device).unsqueeze(1)  # (T, 1)
    key_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    mask = key_pos <= query_pos  # (T, S)
    if key_mask is not None:
        visible = key_mask.to(device=mask.device, dtype=torch.bool)[:, None, None, :]  # (B,1,1,S)
        mask = (mask & visible) | (key_pos == query_pos)  # (B, 1, T, S)
    return mask


def attention_with_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    attn_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal scaled dot-product attention computed explicitly; returns (output, weights).

    ``q``: (B, nh, T, hs), ``k``/``v``: (B, nh, S, hs) with S >= T; query ``i`` sits at key
    position ``S - T + i``. ``attn_mask`` (True = may attend, broadcastable to (B, nh, T, S),
    e.g. from :func:`causal_mask`) replaces the plain causal mask. Same result as
    ``F.scaled_dot_product_attention`` with that mask (``is_causal=True`` for S == T), but
    slower: use it to look at the weights.
    """
    T, S = q.shape[-2], k.shape[-2]
    if attn_mask is None:
        attn_mask = causal_mask(T, S, device=q.device)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, nh, T, S)
    weights = torch.softmax(scores.masked_fill(~attn_mask, float("-inf")), dim=-1)
    out = F.dropout(weights, p=dropout_p) @ v  # (B, nh, T, hs)
    return out, weights


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention as GPT-2 computes it (names follow OpenAI's checkpoint).

    ``layer_idx`` says which slot of a :class:`~gpt2lib.kv_cache.KVCache` this layer uses.
    """

    def __init__(self, cfg: GPTConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.layer_idx = layer_idx
        self.c_attn = nn.Linear(cfg.emb_dim, 3 * cfg.emb_dim, bias=cfg.qkv_bias)  # fused q, k, v
        self.c_proj = nn.Linear(cfg.emb_dim, cfg.emb_dim)
        self.dropout = cfg.drop_rate
        self.resid_dropout = nn.Dropout(cfg.drop_rate)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        split = (B, T, self.n_heads, C // self.n_heads)
        return tuple(t.view(split).transpose(1, 2) for t in (q, k, v))  # 3 x (B, nh, T, hs)

    def _qkv(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, cache: KVCache | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Queries (B, nh, T, hs), keys and values (B, nh, S, hs) and the mask to use."""
        q, k, v = self._heads(x)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # the cached keys, then these T
        T, S = q.shape[2], k.shape[2]
        if attn_mask is None and 1 < T < S:  # a chunk after cached tokens: causal from the end
            attn_mask = causal_mask(T, S, device=x.device)
        return q, k, v, attn_mask

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        B, nh, T, hs = y.shape
        y = y.transpose(1, 2).contiguous().view(B, T, nh * hs)  # re-assemble heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend over ``x`` (B, T, C), or over the cached tokens and ``x``; returns (B, T, C).

        ``attn_mask``: True where a query may attend (see :func:`causal_mask`); None means
        plain causal attention.
        """
        q, k, v, attn_mask = self._qkv(x, attn_mask, cache)  # (B, nh, T, hs), (B, nh, S, hs)
        # no mask left means S == T (plain causal) or a single new query, which sees every key
        # (_qkv made a mask for the other cases); a branch, so that tracing sees a plain bool
        is_causal = False
        if attn_mask is None and q.shape[2] > 1:
            is_causal = True
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal
        )  # (B, nh, T, hs)
        return self._merge(y)  # (B, T, C)

    def forward_with_weights(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same as :meth:`forward` via the explicit path; also returns (B, nh, T, S) weights."""
        q, k, v, attn_mask = self._qkv(x, attn_mask, cache)
        dropout_p = self.dropout if self.training else 0.0
        y, weights = attention_with_weights(q, k, v, dropout_p, attn_mask)
        return self._merge(y), weights
