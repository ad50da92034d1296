"""gpt2lib.tokenizer: GPT-2's byte-level BPE from scratch, with tiktoken's ``gpt2`` encoding as the
oracle, and a BPE trained from raw bytes."""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import pytest
import regex

from gpt2lib.data.instructions import load_instructions
from gpt2lib.data.spam import load_sms_spam
from gpt2lib.data.text import load_verdict
from gpt2lib.files import FileFormatError
from gpt2lib.tokenizer import (
    BPE_FILES,
    ENDOFTEXT_ID,
    GPT2_PATTERN,
    BPETokenizer,
    _tiktoken_cache_dir,
    bytes_to_unicode,
    get_tokenizer,
    train_bpe,
)

TRICKY = [
    "Hello, do you like tea? In the sunlit terraces",
    "  leading, trailing and   inner   spaces   ",
    "tabs\tand\nnewlines\n\n\n  indented\r\nwindows line",
    "I'm sure you'll see they've said she'd go; it's HE'S and I'M",
    "naïve café, Zürich, Ελληνικά, русский, 東京, 한국어, العربية",
    "emoji 🤖👍🏽 family 👨‍👩‍👧 flags 🇩🇪 and a lone surrogate-free \u200b zero width",
    "numbers 1234567890 3.14159 -42 1e10 0x1F",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # code\n",
    "",
    " ",
    "\n",
    "a" * 300,
    "!!!??? ... --- ___ ***",
]


@pytest.fixture(scope="module")
def ours() -> BPETokenizer:
    return BPETokenizer.gpt2()


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    return get_tokenizer()


def test_the_byte_table_is_a_bijection_onto_printable_characters() -> None:
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[32] == "Ġ" and table[10] == "Ċ"
    assert all(c.isprintable() and not c.isspace() for c in table.values())


@pytest.mark.parametrize("text", TRICKY)
def test_ids_equal_tiktoken_on_tricky_text(ours, tiktoken_gpt2, text: str) -> None:
    assert ours.encode(text) == tiktoken_gpt2.encode(text)
    assert ours.decode(ours.encode(text)) == text


def test_the_design_numbers(ours) -> None:
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces"
    expected = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114]
    assert ours.encode(text, allowed_special={"<|endoftext|>"}) == expected
    assert ours.encode(text, allowed_special="all") == expected
    assert ours.n_vocab == 50257


def test_ids_equal_tiktoken_on_the_books_texts(ours, tiktoken_gpt2) -> None:
    verdict = load_verdict()
    assert ours.encode(verdict) == tiktoken_gpt2.encode(verdict)
    for record in load_instructions():
        for field in ("instruction", "input", "output"):
            assert ours.encode(record[field]) == tiktoken_gpt2.encode(record[field])
    for message in load_sms_spam()["Text"]:
        assert ours.encode(message) == tiktoken_gpt2.encode(message)


def test_special_tokens_are_refused_unless_allowed(ours) -> None:
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>'.*allowed_special"):
        ours.encode("a <|endoftext|> b")
    text = "a <|endoftext|> b<|endoftext|>"
    ids = ours.encode(text, allowed_special={"<|endoftext|>"})
    assert ids == get_tokenizer().encode(text, allowed_special={"<|endoftext|>"})
    assert ids.count(50256) == 2
    assert ours.encode_ordinary("<|endoftext|>") == get_tokenizer().encode_ordinary("<|endoftext|>")
    with pytest.raises(ValueError, match="not special tokens"):
        ours.encode("x", allowed_special={"<|im_start|>"})


def test_bad_input_is_named(ours) -> None:
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        ours.encode(b"hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got NoneType"):
        ours.encode(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"token ID 50257 is not in the vocabulary of 50,257 IDs"):
        ours.decode([15496, 50257])
    with pytest.raises(ValueError, match=r"token ID -1 is not in the vocabulary"):
        ours.decode([-1])


def test_bytes_that_are_not_utf8_decode_with_replacement_characters(ours, tiktoken_gpt2) -> None:
    ids = tiktoken_gpt2.encode("é🤖")  # the emoji's four bytes are split over three tokens
    for cut in range(1, len(ids) + 1):  # tokens that end inside a character
        assert ours.decode(ids[:cut]) == tiktoken_gpt2.decode(ids[:cut])
    assert ours.decode(ids[:2]) == "é\ufffd"


def test_from_files_names_a_broken_file(tmp_path) -> None:
    encoder = tmp_path / "encoder.json"
    vocab = tmp_path / "vocab.bpe"
    encoder.write_text(json.dumps({"a": 0, "b": 1, "ab": 2}), encoding="utf-8")
    vocab.write_text("#version: 0.2\na b\n", encoding="utf-8")
    tok = BPETokenizer.from_files(encoder, vocab)
    assert tok.bpe("abab") == ["ab", "ab"]
    vocab.write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(FileFormatError, match=r"line 2 is not a pair"):
        BPETokenizer.from_files(encoder, vocab)
    encoder.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(FileFormatError, match="token -> ID"):
        BPETokenizer.from_files(encoder, vocab)


def test_a_trained_bpe_round_trips_and_compresses() -> None:
    verdict = load_verdict()
    tok, merges = train_bpe(verdict, 400)
    assert len(tok.encoder) == 400 and len(merges) >= 144
    table = bytes_to_unicode()  # the first merge: the most frequent pair within words, by hand
    pairs = collections.Counter(
        (table[a], table[b])
        for word in regex.findall(GPT2_PATTERN, verdict)
        for a, b in zip(word.encode(), word.encode()[1:], strict=False)
    )
    assert merges[0] == pairs.most_common(1)[0][0]
    unseen = "A sentence it never saw: 東京, emoji 🤖, numbers 2026.\n\tTabs too."
    assert tok.decode(tok.encode(unseen)) == unseen
    assert tok.decode(tok.encode(verdict)) == verdict
    assert len(tok.encode(verdict)) / len(verdict.encode("utf-8")) < 0.6  # well below 1 per byte
    byte_level, _ = train_bpe(verdict, 256)  # no merges: one token per byte
    assert len(byte_level.encode(verdict)) == len(verdict.encode("utf-8"))


def test_training_follows_the_pair_counts() -> None:
    tok, merges = train_bpe("aaab aaab aaab xy", 258, pattern=GPT2_PATTERN)
    assert merges == [("a", "a"), ("aa", "a")]  # 'aa' occurs twice per word, then 'aaa'
    assert tok.bpe("aaab") == ["aaa", "b"]
    with pytest.raises(ValueError, match="at least 256"):
        train_bpe("text", 100)
    with pytest.raises(TypeError, match="must be a str"):
        train_bpe(b"text", 300)  # type: ignore[arg-type]


def test_golden_ids():
    tok = get_tokenizer()
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces"
    ids = tok.encode(text, allowed_special={"<|endoftext|>"})
    assert ids == [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114]
    assert tok.decode(ids) == text
    assert tok.n_vocab == 50257
    assert tok.eot_token == ENDOFTEXT_ID == 50256


def test_cache_seeded_with_verified_files():
    get_tokenizer()
    for url, sha256 in BPE_FILES.items():
        cached = Path(_tiktoken_cache_dir()) / hashlib.sha1(url.encode()).hexdigest()
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha256
