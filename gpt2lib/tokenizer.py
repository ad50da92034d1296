"""GPT-2's byte-pair encoding, through tiktoken.

tiktoken's ``gpt2`` encoding reads two files, ``encoder.json`` and ``vocab.bpe``, from OpenAI's
blob store and keeps them in its cache directory under ``sha1(url)``. :func:`get_tokenizer`
fetches them through :mod:`gpt2lib.download` first (so ``GPT2LIB_MIRROR`` applies, and each file
is checked against the sha256 tiktoken expects) and places them where tiktoken looks; tiktoken
itself is used unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import tiktoken

from .download import fetch
from .files import atomic_path, sha256_file

ENDOFTEXT_ID = 50256
BPE_FILES = {  # url -> sha256 (the hashes tiktoken checks)
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe": (
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    ),
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json": (
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    ),
}


def _tiktoken_cache_dir() -> Path:
    # the same lookup tiktoken.load.read_file_cached performs
    env = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_tiktoken_cache() -> None:
    """Put GPT-2's two BPE files into tiktoken's cache, fetched through the download layer."""
    cache = _tiktoken_cache_dir()
    for url, sha256 in BPE_FILES.items():
        target = cache / hashlib.sha1(url.encode()).hexdigest()
        if target.is_file() and sha256_file(target) == sha256:
            continue
        with atomic_path(target) as tmp:  # tiktoken never sees half a file
            shutil.copyfile(fetch(url, sha256=sha256), tmp)


@functools.cache
def get_tokenizer() -> tiktoken.Encoding:
    """GPT-2's tokenizer; ``<|endoftext|>`` is token 50256."""
    seed_tiktoken_cache()
    return tiktoken.get_encoding("gpt2")
