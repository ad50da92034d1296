import hashlib
from pathlib import Path

from gpt2lib.tokenizer import BPE_FILES, ENDOFTEXT_ID, _tiktoken_cache_dir, get_tokenizer


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
