"""The teaching versions: the simple forms of ideas the library implements in production form."""

from __future__ import annotations

import math

import torch
from torch import nn


def simple_attention(x: torch.Tensor) -> torch.Tensor:
    """Self-attention without weights: each token is a softmax-weighted mix of all tokens.

    ``x``: (T, C) token embeddings. Scores are plain dot products ``x @ x.T``.
    """
    scores = x @ x.T  # (T, T)
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1
    return weights @ x  # (T, C)


class SelfAttention(nn.Module):
    """Scaled dot-product attention with trainable query, key and value projections."""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)  # (..., T, d_out)
        scores = q @ k.transpose(-2, -1)  # (..., T, T)
        weights = torch.softmax(scores / math.sqrt(k.shape[-1]), dim=-1)
        return weights @ v  # (..., T, d_out)


class CausalAttention(SelfAttention):
    """Single-head attention that cannot look ahead, with dropout on the attention weights."""

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False
    ) -> None:
        super().__init__(d_in, d_out, qkv_bias)
        self.dropout = nn.Dropout(dropout)
        # True above the diagonal: the future positions a token must not see
        mask = torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)  # (B, T, d_out)
        scores = q @ k.transpose(1, 2)  # (B, T, T)
        scores = scores.masked_fill(self.mask[:T, :T], float("-inf"))  # softmax turns -inf into 0
        weights = torch.softmax(scores / math.sqrt(k.shape[-1]), dim=-1)
        return self.dropout(weights) @ v  # (B, T, d_out)


class MultiHeadAttentionWrapper(nn.Module):
    """Multi-head attention as a loop over independent :class:`CausalAttention` heads."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)
            for _ in range(num_heads)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(x) for head in self.heads], dim=-1)  # (B, T, num_heads * d_out)


class LayerNorm(nn.Module):
    """Normalise the last dimension to mean 0 and variance 1, then scale and shift."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # OpenAI's "g"
        self.bias = nn.Parameter(torch.zeros(dim))  # OpenAI's "b"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # biased, as GPT-2 and nn.LayerNorm
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias


class GELU(nn.Module):
    """GELU with GPT-2's tanh approximation (Hendrycks & Gimpel, 2016)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
