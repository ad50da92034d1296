"""GPT-2's tokenizer: byte-level BPE written from scratch, training a small one, and tiktoken's."""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import regex
import tiktoken

from .download import fetch
from .files import FileFormatError, atomic_path, read_text, sha256_file

# OpenAI's pre-tokenizer: contractions, letters, numbers and other symbols (each with at most one
# leading space), whitespace that is not followed by a word, then any other whitespace
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from the 256 byte values to 256 printable characters.

    The 188 bytes that are printable characters of Latin-1 (``!`` to ``~``, ``¡`` to ``¬``,
    ``®`` to ``ÿ``) stand for themselves; the other 68 are mapped, in byte order, to the
    characters from U+0100 on (so byte 32, the space, is ``Ġ`` and byte 10, newline, ``Ċ``).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


class BPETokenizer:
    """Byte-level BPE: ``encoder`` maps each token (a string in the byte table's characters) to
    its ID, ``merges`` lists the learned pairs in order (rank 0 first), ``special_tokens`` maps
    tokens such as ``<|endoftext|>`` to their IDs."""

    def __init__(
        self,
        encoder: dict[str, int],
        merges: Sequence[tuple[str, str]],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_PATTERN,
    ) -> None:
        self.encoder = dict(encoder)
        self.special_tokens = dict(special_tokens or {})
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.special_decoder = {i: t for t, i in self.special_tokens.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.pattern = regex.compile(pattern)
        self.n_vocab = max([*self.decoder, *self.special_decoder]) + 1
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_files(
        cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike
    ) -> BPETokenizer:
        """Read OpenAI's two files: ``encoder.json`` (token -> ID) and ``vocab.bpe`` (the merges,
        one ``"a b"`` pair a line after a ``#version`` line). ``<|endoftext|>`` is special."""
        try:
            encoder = json.loads(read_text(encoder_json, "encoder.json"))
        except json.JSONDecodeError as err:
            raise FileFormatError(encoder_json, f"not valid JSON: {err}") from None
        if not isinstance(encoder, dict):
            raise FileFormatError(encoder_json, "expected a JSON object of token -> ID")
        merges = []
        for lineno, line in enumerate(read_text(vocab_bpe, "vocab.bpe").splitlines(), start=1):
            if not line or line.startswith("#version"):
                continue
            pair = tuple(line.split(" "))
            if len(pair) != 2:
                raise FileFormatError(vocab_bpe, f"line {lineno} is not a pair 'a b': {line!r}")
            merges.append(pair)
        special = {ENDOFTEXT: encoder.pop(ENDOFTEXT)} if ENDOFTEXT in encoder else {}
        return cls(encoder, merges, special)

    @classmethod
    def gpt2(cls) -> BPETokenizer:
        """GPT-2's tokenizer from OpenAI's files, fetched (once, sha256-checked) from their
        canonical URLs through :mod:`gpt2lib.download`."""
        from .download import fetch
        from .tokenizer import BPE_FILES

        paths = {url.rsplit("/", 1)[1]: fetch(url, sha256=h) for url, h in BPE_FILES.items()}
        return cls.from_files(paths["encoder.json"], paths["vocab.bpe"])

    # --- encoding ---------------------------------------------------------------------------

    def bpe(self, word: str) -> list[str]:
        """Merge the characters of ``word`` (byte-table characters) by rank; return the tokens."""
        parts = list(word)
        while len(parts) > 1:
            pairs = set(zip(parts, parts[1:], strict=False))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break  # no pair of the word was ever merged
            merged, i = [], 0
            while i < len(parts):  # every occurrence of the pair, left to right
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode_ordinary(self, text: str) -> list[int]:
        """Token IDs of ``text`` read as plain text: special tokens get no special treatment."""
        ids: list[int] = []
        for word in self.pattern.findall(text):
            cached = self._cache.get(word)
            if cached is None:
                mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
                cached = self._cache[word] = [self.encoder[t] for t in self.bpe(mapped)]
            ids.extend(cached)
        return ids

    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Token IDs of ``text``, as tiktoken's ``encode``.

        A special token in ``text`` (``<|endoftext|>``) becomes its ID if it is in
        ``allowed_special`` (or that is ``"all"``), and is refused with a ``ValueError``
        otherwise, so that text from users cannot smuggle in control tokens.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"not special tokens of this tokenizer: {sorted(unknown)}")
        for token in set(self.special_tokens) - allowed:
            if token in text:
                raise ValueError(
                    f"the text contains the special token {token!r}: pass "
                    f"allowed_special={{{token!r}}} to encode it as one, or remove it"
                )
        if not allowed:
            return self.encode_ordinary(text)
        splitter = regex.compile("(" + "|".join(regex.escape(t) for t in sorted(allowed)) + ")")
        ids: list[int] = []
        for piece in splitter.split(text):  # odd pieces are the special tokens
            if piece in allowed:
                ids.append(self.special_tokens[piece])
            elif piece:
                ids.extend(self.encode_ordinary(piece))
        return ids

    # --- decoding ---------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes the token IDs stand for; ``ValueError`` naming an ID outside the vocabulary."""
        out = bytearray()
        for i in ids:
            if i in self.decoder:
                out.extend(self.byte_decoder[c] for c in self.decoder[i])
            elif i in self.special_decoder:
                out.extend(self.special_decoder[i].encode("utf-8"))
            else:
                raise ValueError(
                    f"token ID {i!r} is not in the vocabulary of {self.n_vocab:,} IDs "
                    f"(0 to {self.n_vocab - 1})"
                )
        return bytes(out)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of the token IDs. A token can end inside a multi-byte character; bytes that
        are not valid UTF-8 become U+FFFD, as tiktoken's ``decode`` does."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def train_bpe(
    text: str, vocab_size: int, pattern: str = GPT2_PATTERN
) -> tuple[BPETokenizer, list[tuple[str, str]]]:
    """Learn a byte-level BPE of ``vocab_size`` tokens from ``text``; return the tokenizer and
    its merges, in the order learned.

    Tokens 0-255 are the bytes (in byte order, in the byte table's characters); each further
    token is the merge of the most frequent adjacent pair of tokens within the words the
    pre-tokenizer finds (ties: the pair seen first), counted over the distinct words weighted by
    how often each occurs, as minbpe's ``RegexTokenizer`` trains.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (one token per byte), got {vocab_size}")
    table = bytes_to_unicode()
    counts = collections.Counter(regex.findall(pattern, text))
    words = [[table[b] for b in w.encode("utf-8")] for w in counts]
    freqs = list(counts.values())
    encoder = {table[b]: b for b in range(256)}
    merges: list[tuple[str, str]] = []
    while len(encoder) < vocab_size:
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for word, freq in zip(words, freqs, strict=True):
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += freq
        if not pairs:
            break  # every word is a single token: nothing left to merge
        best = max(pairs, key=pairs.__getitem__)  # Counter keeps first-seen order for ties
        merges.append(best)
        encoder.setdefault(best[0] + best[1], len(encoder))
        words = [_merge(word, best) for word in words]
    return BPETokenizer(encoder, merges, pattern=pattern), merges


def _merge(word: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


# --- tiktoken ----------------------------------------------------------------------------------

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
