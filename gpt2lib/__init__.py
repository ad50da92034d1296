"""gpt2lib: GPT-2 from scratch in PyTorch, the library behind the book.

The top level exports the model; everything else lives in a module named for its idea
(``gpt2lib.attention``, ``gpt2lib.generate``, ``gpt2lib.weights``, ``gpt2lib.lora``, ...).
"""

from .config import GPTConfig
from .model import GPTModel

__all__ = ["GPTConfig", "GPTModel"]
__version__ = "0.1.0"
