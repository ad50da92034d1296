"""Turning next-token logits into text: greedy decoding, temperature, top-k and top-p sampling.

Top-k sampling: Fan et al. (2018), "Hierarchical Neural Story Generation"; top-p (nucleus)
sampling: Holtzman et al. (2020), "The Curious Case of Neural Text Degeneration".
"""

from __future__ import annotations

import tiktoken
import torch
from torch import nn

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
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
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
    """Pick one token per row from (B, vocab) logits: argmax at temperature 0, else sample."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


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
) -> torch.Tensor:
    """Extend the token IDs ``idx`` (B, T) by up to ``max_new_tokens``; returns (B, T + n).

    Greedy at ``temperature == 0``; otherwise sampling, optionally restricted by ``top_k`` and
    ``top_p``. The context is cropped to the model's ``context_length``. With ``eos_id``, a row
    that produced it keeps producing it, and decoding stops once every row has.
    """
    if idx.dim() != 2:
        raise ValueError(f"idx must be a (batch, tokens) tensor of token IDs, got shape {tuple(idx.shape)}")
    context_length = model.cfg.context_length
    was_training = model.training
    model.eval()
    done = torch.zeros(idx.shape[0], 1, dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        logits = model(idx[:, -context_length:])[:, -1, :]  # (B, vocab) at the last position
        token = next_token(logits, temperature, top_k, top_p, generator)  # (B, 1)
        if eos_id is not None:
            token = token.masked_fill(done, eos_id)
            done |= token == eos_id
        idx = torch.cat([idx, token], dim=1)  # (B, T + 1)
        if eos_id is not None and bool(done.all()):
            break
    model.train(was_training)
    return idx


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
