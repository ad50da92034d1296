"""gpt2lib: GPT-2 from scratch in PyTorch, the library behind the book."""

from .config import GPTConfig
from .model import GPTModel

__all__ = ["GPTConfig", "GPTModel"]
__version__ = "0.1.0"
