"""A decode step with static shapes: compiled once, replayed as a CUDA graph."""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .generate import check_generate_arguments, decode, generate
from .kv_cache import KVCache
from .model import eval_mode

BUCKET = 256  # cache lengths are rounded up to a multiple of this (capped at the context)


class _SlotWriter:
    """The view of the cache a static step's attention layers see: ``update`` writes the new
    key and value of every row at ``slot`` and returns the full (B, nh, max_len, hs) tensors."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], slot: torch.Tensor):
        self.keys, self.values, self.slot = keys, values, slot

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[layer].index_copy_(2, self.slot, k)  # (B, nh, max_len, hs), one slot written
        self.values[layer].index_copy_(2, self.slot, v)
        return self.keys[layer], self.values[layer]


def decode_step(
    model: nn.Module,
    token: torch.Tensor,
    position: torch.Tensor,
    slot: torch.Tensor,
    key_mask: torch.Tensor,
    keys: list[torch.Tensor],
    values: list[torch.Tensor],
) -> torch.Tensor:
    """Logits (B, vocab) after one new token per row, with static shapes throughout.

    ``token`` (B, 1): the new tokens; ``position`` (B, 1): their position ids; ``slot`` (1,):
    the cache slot they go to (the same column for every row); ``key_mask`` (B, max_len): False
    at left padding; ``keys``/``values``: the cache, n_layers x (B, nh, max_len, hs).
    """
    max_len = keys[0].shape[2]
    written = torch.arange(max_len, device=token.device) <= slot  # (max_len,)
    mask = (key_mask & written)[:, None, None, :]  # (B, 1, 1, max_len): may attend
    cache = _SlotWriter(keys, values, slot)
    x = model.embed(token, position)  # (B, 1, C)
    for block in model.h:
        x = block(x, mask, cache)  # (B, 1, C)
    return model.head(x)[:, -1]  # (B, vocab)


def prefill(
    model: nn.Module,
    idx: torch.Tensor,
    attention_mask: torch.Tensor | None,
    keys: list[torch.Tensor],
    values: list[torch.Tensor],
) -> torch.Tensor:
    """Logits (B, vocab) after the prompts ``idx`` (B, T), whose keys and values fill the
    cache's first T slots (:meth:`GPTModel.forward` with a :class:`KVCache` on those tensors)."""
    cache = KVCache(keys, values)
    return model.head(model.hidden(idx, cache, attention_mask)[:, -1])


@dataclass
class Session:
    """One generation on a :class:`StaticDecoder`: feed it the chosen token, get the next logits."""

    decoder: StaticDecoder
    token: torch.Tensor  # (B, 1) the token to feed next (one buffer: the same strides every step)
    position: torch.Tensor  # (B, 1) position id of the next token of each row
    slot: torch.Tensor  # (1,) the cache slot of the next token
    key_mask: torch.Tensor  # (B, max_len)
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) after ``token`` (B, 1)."""
        if self.decoder.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are consumed
        self.token.copy_(token)
        logits = self.decoder.compiled_step(
            self.decoder.model, self.token, self.position, self.slot, self.key_mask,
            self.keys, self.values,
        )  # fmt: skip
        self.position += 1
        self.slot += 1
        return logits


def _own_copy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a code object of its own. ``torch.compile`` keeps its compiled versions on
    the code object, at most ``torch._dynamo.config.recompile_limit`` of them (8) per function,
    for all callers together; each decoder gets its own budget (batch sizes x cache lengths)."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__)


class StaticDecoder:
    """Compiled prefill and decode step of ``model``, for greedy or sampled generation (see the
    module doc): ``StaticDecoder(model).generate(idx, n)``.

    ``mode``: ``torch.compile``'s mode for the step (default: ``"reduce-overhead"`` on CUDA,
    which adds CUDA graphs; ``"default"`` elsewhere). ``backend``: ``torch.compile``'s backend
    (``"inductor"``; tests count compilations with a counting backend). Keep one per model and
    pass it to every generation: the step compiles once per batch size and cache length, and
    its cache tensors are reused. Made for the model's device and dtype as they are now.
    """

    def __init__(self, model: nn.Module, mode: str | None = None, backend: Any = "inductor"):
        self.model = model
        self.device = next(model.parameters()).device
        self.mode = mode or ("reduce-overhead" if self.device.type == "cuda" else "default")
        self.cuda_graphs = self.device.type == "cuda" and self.mode == "reduce-overhead"
        mode_arg = {"mode": self.mode} if backend == "inductor" else {}  # inductor's option
        self.compiled_step = torch.compile(
            _own_copy(decode_step), backend=backend, fullgraph=True, dynamic=False, **mode_arg
        )
        # only the prompt's length varies (marked in start); dynamic=True would also make the
        # cache's dimensions symbolic, and a prompt as long as one of them (n_heads, say) would
        # then be specialised to that size
        self.compiled_prefill = torch.compile(_own_copy(prefill), backend=backend)
        self._caches: dict[tuple[int, int, torch.dtype], tuple[list, list]] = {}

    def _cache(
        self, batch: int, max_len: int, dtype: torch.dtype
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The cache tensors for this shape: made once, then reused (their addresses are baked
        into a CUDA graph, so new ones would mean recording it again)."""
        key = (batch, max_len, dtype)
        if key not in self._caches:
            cache = KVCache.empty(self.model.cfg, batch, max_len, self.device, dtype)
            for t in (*cache.keys, *cache.values):
                torch._dynamo.mark_static_address(t)  # mutated in place by the graph
            self._caches[key] = (cache.keys, cache.values)
        return self._caches[key]

    def start(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Session]:
        """Prefill the prompts ``idx`` (B, T); return the logits (B, vocab) after them and the
        :class:`Session` that decodes the next tokens. Needs ``T + max_new_tokens`` to fit in
        the context (see :func:`fits`)."""
        model = self.model
        B, T = idx.shape
        ctx = model.cfg.context_length
        if not fits(model, T, max_new_tokens):
            raise ValueError(f"{T} + {max_new_tokens} tokens do not fit the context ({ctx})")
        max_len = min(ctx, -(-(T + max_new_tokens) // BUCKET) * BUCKET)
        dtype = next(model.parameters()).dtype
        keys, values = self._cache(B, max_len, dtype)
        real = torch.ones_like(idx, dtype=torch.bool) if attention_mask is None else (
            attention_mask.to(idx.device).bool()
        )  # fmt: skip
        key_mask = torch.ones(B, max_len, dtype=torch.bool, device=idx.device)
        key_mask[:, :T] = real
        torch._dynamo.maybe_mark_dynamic(idx, 1)  # the prompt's length: one graph for all
        if attention_mask is not None:
            torch._dynamo.maybe_mark_dynamic(attention_mask, 1)
        logits = self.compiled_prefill(model, idx, attention_mask, keys, values)
        position = real.sum(dim=1, keepdim=True)  # (B, 1): real tokens before the next one
        slot = torch.tensor([T], device=idx.device)
        token = torch.zeros(B, 1, dtype=torch.long, device=idx.device)
        return logits, Session(self, token, position, slot, key_mask, keys, values)


    @torch.inference_mode()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:func:`gpt2lib.generate.generate` (same arguments) through the compiled prefill and
        step; a sequence that outgrows the context takes ``generate``'s sliding window."""
        model = self.model
        if not fits(model, idx.shape[1], max_new_tokens):
            return generate(
                model, idx, max_new_tokens, temperature, top_k, top_p, eos_id, generator,
                attention_mask=attention_mask,
            )  # fmt: skip
        check_generate_arguments(model, idx, max_new_tokens, temperature, attention_mask)
        session: Session | None = None

        def next_logits(idx: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            nonlocal session
            if session is None:
                logits, session = self.start(idx, max_new_tokens, mask)
                return logits
            return session.step(idx[:, -1:])

        with eval_mode(model):
            return decode(
                next_logits, idx, max_new_tokens, temperature, top_k, top_p, eos_id, generator,
                attention_mask,
            )  # fmt: skip

def fits(model: nn.Module, prompt_len: int, max_new_tokens: int) -> bool:
    """Whether the static path can decode ``max_new_tokens`` after ``prompt_len`` tokens: the
    whole sequence (the last token is never fed back) must fit in the context."""
    return prompt_len + max(max_new_tokens - 1, 0) <= model.cfg.context_length
