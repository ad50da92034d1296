"""Turning next-token logits into text: greedy decoding, temperature, top-k and top-p sampling."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import tiktoken
import torch
from torch import nn

from .kv_cache import KVCache
from .model import check_attention_mask, check_token_ids, eval_mode
from .tokenizer import get_tokenizer


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row; set the rest to -inf."""
    if k <= 0:
        raise ValueError(f"top_k must be positive, got {k}")
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1) the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probabilities add up to at least ``p``."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p == 1.0:
        return logits  # everything: a rounding error in the sum must not drop the tail
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.double(), dim=-1)  # float64: the sum is not cut short
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    sorted_logits = sorted_logits.masked_fill(mass_before >= p, float("-inf"))  # top-1 always kept
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row from (B, vocab) logits: argmax at temperature 0, else sample.

    ``generator`` may live on another device than ``logits``: the sampling then runs on the
    generator's device, so a seeded CPU generator gives the same tokens for a model on the GPU.
    """
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits.float(), dim=-1)
    if generator is not None and generator.device != probs.device:
        # sample where the generator lives (e.g. a CPU generator with a model on the GPU), so
        # that one seed gives the same tokens on every device, then come back
        token = torch.multinomial(probs.to(generator.device), 1, generator=generator)
        return token.to(logits.device)  # (B, 1)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


LogitsFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def check_generate_arguments(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    attention_mask: torch.Tensor | None,
) -> None:
    """Raise a ``ValueError`` that names what is wrong with :func:`generate`'s arguments."""
    if idx.dim() != 2:
        raise ValueError(
            f"idx must be a (batch, tokens) tensor of token IDs, got shape {tuple(idx.shape)}"
        )
    if idx.shape[1] == 0:
        raise ValueError("idx must hold at least one token per row (a prompt to continue)")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    check_token_ids(idx, model.cfg.vocab_size)
    if attention_mask is not None:
        if attention_mask.shape != idx.shape:
            raise ValueError(
                f"attention_mask must have idx's shape {tuple(idx.shape)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        check_attention_mask(attention_mask)


def last_logits_fn(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, use_cache: bool) -> LogitsFn:
    """``next_logits(idx, mask)``: the logits (B, vocab) after all of ``idx`` so far.

    With ``use_cache``, a :class:`KVCache` holds the keys and values of what the model has seen,
    and only the new tokens are fed. Once the sequence outgrows the context, the cache is
    refilled with the window of the last ``context_length`` tokens, which is what the uncached
    path feeds at every step.
    """
    window = model.cfg.context_length
    cache = None
    if use_cache:
        B, T = idx.shape
        max_len = min(window, T + max_new_tokens)
        dtype = next(model.parameters()).dtype
        cache = KVCache.empty(model.cfg, B, max_len, idx.device, dtype)
    fed = 0  # columns of idx the model has seen (and the cache holds, if it still fits)

    def next_logits(idx: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        nonlocal fed
        if cache is not None and cache.length + idx.shape[1] - fed <= cache.max_len:
            new, start = idx[:, fed:], fed - cache.length  # the mask covers the cache too
        else:
            if cache is not None:
                cache.reset()
            new, start = idx[:, -window:], max(idx.shape[1] - window, 0)
        mask = None if mask is None else mask[:, start:]  # (B, cached + new)
        fed = idx.shape[1]
        return model.head(model.hidden(new, cache, mask)[:, -1])  # (B, vocab)

    return next_logits


def decode(
    next_logits: LogitsFn,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The decoding loop: pick a token from ``next_logits(idx, mask)``, append it, repeat.

    With ``eos_id``, a row that produced it keeps producing it, and the loop stops once every
    row has. Returns (B, T + n).
    """
    mask = None if attention_mask is None else attention_mask.to(idx.device, torch.long)
    done = torch.zeros(idx.shape[0], 1, dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        logits = next_logits(idx, mask)  # (B, vocab)
        token = next_token(logits.float(), temperature, top_k, top_p, generator)  # (B, 1)
        if eos_id is not None:
            token = token.masked_fill(done, eos_id)
            done |= token == eos_id
        idx = torch.cat([idx, token], dim=1)  # (B, T + 1)
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        if eos_id is not None and bool(done.all()):
            break
    return idx


@torch.inference_mode()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    *,
    use_cache: bool = True,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Extend the token IDs ``idx`` (B, T) by up to ``max_new_tokens``; returns (B, T + n).

    Greedy at ``temperature == 0``; otherwise sampling, optionally restricted by ``top_k`` and
    ``top_p``. The context is cropped to the model's ``context_length``. With ``eos_id``, a row
    that produced it keeps producing it, and decoding stops once every row has.
    ``use_cache``: keep keys and values in a :class:`~gpt2lib.kv_cache.KVCache` (same tokens,
    much faster). ``attention_mask`` (B, T): 1 for prompt tokens, 0 for left padding, so that
    prompts of different lengths share a batch.
    """
    check_generate_arguments(model, idx, max_new_tokens, temperature, attention_mask)
    next_logits = last_logits_fn(model, idx, max_new_tokens, use_cache)
    with eval_mode(model):
        return decode(
            next_logits, idx, max_new_tokens, temperature, top_k, top_p, eos_id, generator,
            attention_mask,
        )  # fmt: skip


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths as one left-padded batch: ``(idx, attention_mask)``, (B, T)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token-ID lists")
    width = max(len(p) for p in prompts)
    idx = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return idx, mask


def generate_batch(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    pad_id: int | None = None,
    **kwargs: object,
) -> list[list[int]]:
    """Decode prompts of different lengths together; return each prompt's new token IDs.

    The prompts are left-padded (:func:`left_pad`) with ``pad_id`` (default: ``eos_id`` if
    given, else 0; padding is masked out, so its value does not matter) and passed to
    :func:`generate` with an ``attention_mask``; ``kwargs`` go to :func:`generate`. With
    ``eos_id``, each row's tokens end with its first ``eos_id``. The result equals generating
    each prompt on its own.
    """
    eos_id = kwargs.get("eos_id")
    pad = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
    idx, mask = left_pad(prompts, pad, next(model.parameters()).device)  # type: ignore[arg-type]
    out = generate(model, idx, max_new_tokens, attention_mask=mask, **kwargs)  # type: ignore[arg-type]
    rows = out[:, idx.shape[1] :].tolist()
    if eos_id is not None:
        rows = [row[: row.index(eos_id) + 1] if eos_id in row else row for row in rows]
    return rows


def text_to_ids(text: str, tokenizer: tiktoken.Encoding | None = None) -> torch.Tensor:
    """Encode ``text`` as a (1, T) batch of token IDs (``<|endoftext|>`` allowed)."""
    tokenizer = tokenizer or get_tokenizer()
    ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return torch.tensor(ids, dtype=torch.long).unsqueeze(0)


def ids_to_text(ids: torch.Tensor, tokenizer: tiktoken.Encoding | None = None) -> str:
    """Decode a (T,) or (1, T) tensor of token IDs."""
    tokenizer = tokenizer or get_tokenizer()
    return tokenizer.decode(ids.reshape(-1).tolist())


def generate_text(
    model: nn.Module,
    prompt: str,
    max_new_tokens: int,
    tokenizer: tiktoken.Encoding | None = None,
    **kwargs: object,
) -> str:
    """Text in, text out: the prompt followed by what the model writes."""
    device = next(model.parameters()).device
    idx = text_to_ids(prompt, tokenizer).to(device)
    out = generate(model, idx, max_new_tokens, **kwargs)  # type: ignore[arg-type]
    return ids_to_text(out[0], tokenizer)
