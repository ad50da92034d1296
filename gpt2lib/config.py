"""The one configuration object of a GPT-2 model.

The four published sizes follow OpenAI's ``hparams.json`` files (Radford et al., 2019,
"Language Models are Unsupervised Multitask Learners"); any other field can be overridden
with :func:`dataclasses.replace`::

    cfg = GPTConfig.gpt2("124M")
    small = dataclasses.replace(cfg, context_length=256, drop_rate=0.1)
"""

from __future__ import annotations

from dataclasses import dataclass

# size name -> (emb_dim, n_layers, n_heads), as in OpenAI's hparams.json (n_embd, n_layer, n_head)
GPT2_SIZES: dict[str, tuple[int, int, int]] = {
    "124M": (768, 12, 12),
    "355M": (1024, 24, 16),
    "774M": (1280, 36, 20),
    "1558M": (1600, 48, 25),
}


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257  # GPT-2's BPE: 50,000 merges + 256 bytes + <|endoftext|>
    context_length: int = 1024  # longest sequence the position embedding covers
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.0  # OpenAI trained with 0.1; 0.0 makes eval and train mode agree
    qkv_bias: bool = True  # OpenAI's checkpoints carry query/key/value biases
    tie_embeddings: bool = False  # True: the output head shares the token embedding (as GPT-2 did)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.emb_dim % self.n_heads:
            raise ValueError(
                f"GPTConfig.emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"GPTConfig.drop_rate must be in [0, 1), got {self.drop_rate}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    @classmethod
    def gpt2(cls, size: str, **overrides: object) -> GPTConfig:
        """OpenAI's dimensions for ``size`` (``"124M"``, ``"355M"``, ``"774M"``, ``"1558M"``)."""
        if size not in GPT2_SIZES:
            raise ValueError(f"unknown GPT-2 size {size!r}; valid sizes: {', '.join(GPT2_SIZES)}")
        emb_dim, n_layers, n_heads = GPT2_SIZES[size]
        return cls(emb_dim=emb_dim, n_layers=n_layers, n_heads=n_heads, **overrides)  # type: ignore[arg-type]
