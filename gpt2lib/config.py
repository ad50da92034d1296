"""The one configuration object of a GPT-2 model, and the named sizes."""

from __future__ import annotations

from dataclasses import dataclass, replace

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

    @classmethod
    def mini(cls, **overrides: object) -> GPTConfig:
        """The mini GPT-2 (7.26 M parameters): GPT-2's vocabulary, 128-dim, 4 layers, 4 heads,
        context 256, tied head. Trained with dropout 0.1; inference needs none."""
        return replace(MINI, **overrides)  # type: ignore[arg-type]

    @classmethod
    def tiny(cls, **overrides: object) -> GPTConfig:
        """A 100-token vocabulary, 32-dim, 2 layers, 4 heads, context 32: for tests."""
        return replace(TINY, **overrides)  # type: ignore[arg-type]


MINI = GPTConfig(context_length=256, emb_dim=128, n_heads=4, n_layers=4, tie_embeddings=True)
TINY = GPTConfig(vocab_size=100, context_length=32, emb_dim=32, n_heads=4, n_layers=2)
