"""Turning next-token logits into text: greedy decoding, temperature, top-k and top-p sampling.

Top-k sampling: Fan et al. (2018), "Hierarchical Neural Story Generation"; top-p (nucleus)
sampling: Holtzman et al. (2020), "The Curious Case of Neural Text Degeneration".

:func:`generate` uses a :class:`~gpt2lib.kv_cache.KVCache` by default: one *prefill* pass over
the prompt, then one token per step. GPT-2's positions are absolute, so once the sequence is
longer than the context a sliding window shifts every position and no cached key stays valid;
from then on each step re-runs the window of the last ``context_length`` tokens (a prefill of
the window), exactly what the uncached loop computes. Prompts of different lengths decode
together when left-padded with an ``attention_mask`` (see :func:`generate_batch`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import tiktoken
import torch
from torch import nn

from .kv_cache import KVCache
from .model import check_attention_mask, check_token_ids, eval_mode
from .static_decode import StaticDecoder, fits
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


def _autocast(
    device: torch.device, dtype: torch.dtype | None, model_dtype: torch.dtype
) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` unless it is None or already the model's dtype."""
    if dtype is None or dtype == model_dtype:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _last_logits(
    model: nn.Module,
    idx: torch.Tensor,
    mask: torch.Tensor | None,
    cache: KVCache | None,
    fed: int,
) -> torch.Tensor:
    """Logits (B, vocab) after the last token of ``idx``; its first ``fed`` columns were fed.

    Without a cache: the last ``context_length`` tokens. With one: only the tokens after the
    cached ones, unless they no longer fit, then the cache is refilled with that same window.
    """
    window = model.cfg.context_length
    if cache is not None and cache.length + idx.shape[1] - fed <= cache.max_len:
        idx, start = idx[:, fed:], fed - cache.length  # the new tokens; the mask covers the cache
    else:
        if cache is not None:
            cache.reset()
        idx, start = idx[:, -window:], max(idx.shape[1] - window, 0)
    mask = None if mask is None else mask[:, start:]  # (B, cached + new)
    return model(idx, cache=cache, attention_mask=mask, last_only=True)[:, -1]  # (B, vocab)


def _check_arguments(
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


LogitsFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def _logits_source(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    dtype: torch.dtype | None,
    use_cache: bool,
    decoder: StaticDecoder | None,
) -> LogitsFn:
    """``next_logits(idx, mask)``: the logits (B, vocab) after all of ``idx`` so far.

    The default path feeds the model what it has not seen (with a :class:`KVCache`, or the
    whole window without). With a ``decoder`` the static path (:mod:`gpt2lib.static_decode`)
    prefills once, then runs its compiled one-token step, if the whole sequence fits in the
    context (a longer one needs the sliding window of the default path).
    """
    if decoder is not None:
        if not use_cache:
            raise ValueError("a decoder needs use_cache=True (the compiled step keeps a cache)")
        if decoder.model is not model:
            raise ValueError("the decoder was made for another model: StaticDecoder(model)")
    if decoder is not None and fits(model, idx.shape[1], max_new_tokens):
        session = None

        def static(idx: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            nonlocal session
            if session is None:
                logits, session = decoder.start(idx, max_new_tokens, mask, dtype)
                return logits
            return session.step(idx[:, -1:])

        return static
    cache = None
    if use_cache:
        B, T = idx.shape
        max_len = min(model.cfg.context_length, T + max_new_tokens)
        model_dtype = next(model.parameters()).dtype
        cache = KVCache.empty(model.cfg, B, max_len, idx.device, dtype or model_dtype)
    fed = 0  # columns of idx the model has seen (and the cache holds, if it still fits)

    def default(idx: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        nonlocal fed
        logits = _last_logits(model, idx, mask, cache, fed)
        fed = idx.shape[1]
        return logits

    return default


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
    dtype: torch.dtype | None = None,
    decoder: StaticDecoder | None = None,
) -> torch.Tensor:
    """Extend the token IDs ``idx`` (B, T) by up to ``max_new_tokens``; returns (B, T + n).

    Greedy at ``temperature == 0``; otherwise sampling, optionally restricted by ``top_k`` and
    ``top_p``. The context is cropped to the model's ``context_length``. With ``eos_id``, a row
    that produced it keeps producing it, and decoding stops once every row has.

    ``use_cache``: keep keys and values in a :class:`~gpt2lib.kv_cache.KVCache` (same tokens,
    much faster). ``attention_mask`` (B, T): 1 for prompt tokens, 0 for left padding, so that
    prompts of different lengths share a batch. ``dtype``: run under autocast to, e.g.,
    ``torch.bfloat16`` (None: the model's own dtype, exact). ``decoder``: a
    :class:`~gpt2lib.static_decode.StaticDecoder` of ``model`` decodes with its compiled static
    step (CUDA graphs on a GPU); :func:`~gpt2lib.fast.optimize_for_inference` returns one in
    its settings when it chose compilation. None (default): the eager path.
    """
    _check_arguments(model, idx, max_new_tokens, temperature, attention_mask)
    B = idx.shape[0]
    model_dtype = next(model.parameters()).dtype
    next_logits = _logits_source(model, idx, max_new_tokens, dtype, use_cache, decoder)
    mask = None if attention_mask is None else attention_mask.to(idx.device, torch.long)
    done = torch.zeros(B, 1, dtype=torch.bool, device=idx.device)
    with eval_mode(model), _autocast(idx.device, dtype, model_dtype):
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


def generate_batch(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    pad_id: int | None = None,
    **kwargs: object,
) -> list[list[int]]:
    """Decode prompts of different lengths together; return each prompt's new token IDs.

    The prompts are left-padded to a common length with ``pad_id`` (default: ``eos_id`` if
    given, else 0; padding is masked out, so its value does not matter) and passed to
    :func:`generate` with an ``attention_mask``; ``kwargs`` go to :func:`generate`. With
    ``eos_id``, each row's tokens end with its first ``eos_id``. The result equals generating
    each prompt on its own.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token-ID lists")
    eos_id = kwargs.get("eos_id")
    pad = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    idx = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    out = generate(model, idx, max_new_tokens, attention_mask=mask, **kwargs)  # type: ignore[arg-type]
    rows = out[:, width:].tolist()
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
