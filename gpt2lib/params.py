"""How big is a model: parameter counts (with and without a tied output head) and memory."""

from __future__ import annotations

import torch
from torch import nn

from .config import GPTConfig


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def gpt_parameter_count(cfg: GPTConfig, tied: bool | None = None) -> int:
    """Parameters of ``GPTModel(cfg)`` computed from the config, without building the model.

    ``tied`` overrides ``cfg.tie_embeddings``: with a tied head the output layer reuses the
    token embedding, otherwise it adds ``vocab_size * emb_dim`` parameters of its own.
    """
    C, V = cfg.emb_dim, cfg.vocab_size
    attn = C * 3 * C + (3 * C if cfg.qkv_bias else 0) + C * C + C  # c_attn, c_proj
    mlp = C * 4 * C + 4 * C + 4 * C * C + C  # c_fc, c_proj
    block = attn + mlp + 2 * 2 * C  # two LayerNorms (scale and shift)
    embeddings = V * C + cfg.context_length * C
    total = embeddings + cfg.n_layers * block + 2 * C  # + final LayerNorm
    tied = cfg.tie_embeddings if tied is None else tied
    return total if tied else total + V * C


def memory_bytes(n_params: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes the parameters alone take in ``dtype`` (no gradients, optimizer state or activations)."""
    return n_params * torch.empty((), dtype=dtype).element_size()


def training_memory_bytes(n_params: int, dtype: torch.dtype = torch.float32) -> int:
    """Parameters + gradients + AdamW's two moments: 4 copies, before activations."""
    return 4 * memory_bytes(n_params, dtype)
