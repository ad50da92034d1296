"""The GPT-2 model: embeddings, a stack of pre-LayerNorm transformer blocks, an output head."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention, causal_mask
from .config import GPTConfig
from .kv_cache import KVCache


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block; restore its train/eval mode after, also on error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_token_ids(idx: torch.Tensor, vocab_size: int) -> None:
    """Raise ``ValueError`` naming the first out-of-range id (instead of an IndexError, or a
    device-side assert on a GPU). One reduction and one device sync; skipped while compiling."""
    if idx.dtype not in (torch.long, torch.int, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"token IDs must be an integer tensor, got {idx.dtype}")
    if idx.numel() == 0 or torch.compiler.is_compiling():
        return
    low, high = (int(v) for v in torch.aminmax(idx))
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"token id {bad} is out of range: the vocabulary has {vocab_size} ids "
            f"(0 to {vocab_size - 1})"
        )


def check_attention_mask(mask: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``mask`` (B, S) holds only 0 and 1 with a 1 in every row."""
    if torch.compiler.is_compiling():
        return
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (real tokens)")
    elif not bool(((mask == 0) | (mask == 1)).all()):
        bad = mask[(mask != 0) & (mask != 1)][0].item()
        raise ValueError(
            f"attention_mask must hold only 0 (padding) and 1 (real tokens), found {bad}"
        )
    empty = (mask == 0).all(dim=-1).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"attention_mask rows {empty[:5]} are all padding: no token to attend to")


class FeedForward(nn.Module):
    """Position-wise MLP: expand 4x, GELU, project back."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim)
        self.c_proj = nn.Linear(4 * cfg.emb_dim, cfg.emb_dim)
        self.dropout = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.c_fc(x), approximate="tanh")  # (B, T, 4C)
        return self.dropout(self.c_proj(h))  # (B, T, C)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: GPTConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.emb_dim, eps=1e-5)
        self.attn = MultiHeadAttention(cfg, layer_idx)
        self.ln_2 = nn.LayerNorm(cfg.emb_dim, eps=1e-5)
        self.mlp = FeedForward(cfg)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask, cache)  # shortcut around attention
        x = x + self.mlp(self.ln_2(x))  # shortcut around the feed-forward
        return x


class GPTModel(nn.Module):
    """GPT-2: ``model(idx)`` maps token IDs (B, T) to next-token logits (B, T, vocab_size)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.emb_dim)  # token embedding
        self.wpe = nn.Embedding(cfg.context_length, cfg.emb_dim)  # position embedding
        self.drop = nn.Dropout(cfg.drop_rate)
        self.h = nn.ModuleList(TransformerBlock(cfg, i) for i in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.emb_dim, eps=1e-5)
        self.lm_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # one matrix, two uses
        self.apply(self._init_weights)
        self._scale_residual_projections()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2's initialisation: N(0, 0.02) for weights, zeros for biases
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @torch.no_grad()
    def _scale_residual_projections(self) -> None:
        """GPT-2's scaled init: std 0.02 / sqrt(2 * n_layers) for the residual projections.

        Each block adds to the residual stream twice (``attn.c_proj``, ``mlp.c_proj``), so the
        stream's variance grows with depth; Radford et al. (2019, sec. 2.3) scale these weights
        by 1/sqrt(N) for N residual layers, as nanoGPT does. The N(0, 0.02) draws are rescaled,
        not redrawn, so the random stream (and every later draw) stays the same.
        """
        scale = 1.0 / math.sqrt(2 * self.cfg.n_layers)
        for block in self.h:
            block.attn.c_proj.weight.mul_(scale)
            block.mlp.c_proj.weight.mul_(scale)

    def forward(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token IDs ``idx`` (B, T).

        ``cache``: the tokens follow the ``cache.length`` cached ones, whose keys and values are
        reused; this call's are added. ``attention_mask`` (B, cache.length + T): 1 for real tokens,
        0 for (left) padding.
        """
        return self.head(self.hidden(idx, cache, attention_mask))  # (B, T, vocab_size)

    def hidden(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The last block's output (B, T, C): :meth:`forward` before its :meth:`head`.

        For the logits of some positions only: ``model.head(model.hidden(idx)[:, -1:])`` for the
        last (generation), ``model.head(model.hidden(idx)[keep])`` for those a loss counts.
        """
        B, T = idx.shape
        past = 0 if cache is None else cache.length
        self._check_inputs(idx, past, cache, attention_mask)
        pos, mask = self._positions(B, T, past, attention_mask, idx.device)  # (T,)|(B, T)
        x = self.embed(idx, pos)  # (B, T, C)
        for block in self.h:
            x = block(x, mask, cache)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        return x

    def embed(self, idx: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The blocks' input: token plus position embedding, then dropout. ``idx`` (B, T) token
        IDs, ``pos`` (T,) or (B, T) their positions; returns (B, T, C)."""
        return self.drop(self.wte(idx) + self.wpe(pos))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The output step: final LayerNorm, then the output layer; (B, T, C) -> (B, T, out)."""
        return self.lm_head(self.ln_f(x))

    def _check_inputs(
        self, idx: torch.Tensor, past: int, cache: KVCache | None, mask: torch.Tensor | None
    ) -> None:
        """Raise ``ValueError`` naming what is wrong with :meth:`hidden`'s arguments."""
        if cache is not None and cache.batch_size != idx.shape[0]:
            raise ValueError(f"the KV cache holds {cache.batch_size} rows, idx has {idx.shape[0]}")
        if past + idx.shape[1] > self.cfg.context_length:
            raise ValueError(
                f"sequence of {past + idx.shape[1]} tokens is longer than the model's "
                f"context_length ({self.cfg.context_length}); crop it, e.g. "
                f"idx[:, -{self.cfg.context_length}:]"
            )
        if past == 0:  # checked when a sequence starts: no device sync per decoding step
            check_token_ids(idx, self.cfg.vocab_size)
            if mask is not None:
                check_attention_mask(mask)

    @staticmethod
    def _positions(
        B: int, T: int, past: int, attention_mask: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Position IDs of the T new tokens and the attention mask (None: plain causal)."""
        if attention_mask is None:
            mask = causal_mask(T, past + T, device=device) if 1 < T < past + T else None
            return torch.arange(past, past + T, device=device), mask
        if attention_mask.shape != (B, past + T):
            raise ValueError(
                f"attention_mask must have shape (batch, cached + new tokens) = {(B, past + T)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        real = attention_mask.to(device=device, dtype=torch.long)
        pos = (real.cumsum(dim=1) - 1).clamp(min=0)[:, past:]  # (B, T): 0 at the first real token
        return pos, causal_mask(T, past + T, real, device)  # (B, 1, T, S)


@torch.no_grad()
def attention_weights(model: GPTModel, idx: torch.Tensor) -> torch.Tensor:
    """Every layer's attention weights for token IDs ``idx`` (B, T): (n_layers, B, nh, T, T).

    Runs the model's own blocks in eval mode, each attention through its explicit path
    (:meth:`MultiHeadAttention.forward_with_weights`), to look at what the heads attend to.
    """
    with eval_mode(model):
        return hidden_and_attention(model, idx)[1]


def hidden_and_attention(model: GPTModel, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`GPTModel.hidden`'s output (B, T, C) and every layer's attention weights."""
    x = model.embed(idx, torch.arange(idx.shape[1], device=idx.device))  # (B, T, C)
    weights = []
    for block in model.h:
        attended, w = block.attn.forward_with_weights(block.ln_1(x))  # w: (B, nh, T, T)
        x = x + attended
        x = x + block.mlp(block.ln_2(x))
        weights.append(w)
    return x, torch.stack(weights)  # (B, T, C), (n_layers, B, nh, T, T)
