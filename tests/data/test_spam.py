"""gpt2lib.data.spam: reading the SMS Spam Collection, balancing, splitting, tokenizing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gpt2lib.data.spam import (
    FILE_SHA256,
    SpamDataset,
    balance,
    label_id,
    load_sms_spam,
    load_splits,
    read_split,
    save_splits,
    sms_spam_path,
    split,
)
from gpt2lib.tokenizer import get_tokenizer


@pytest.fixture(scope="module")
def sms() -> pd.DataFrame:
    return load_sms_spam()


@pytest.fixture(scope="module")
def splits(sms: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return split(balance(sms, seed=123), (0.7, 0.1), seed=123)


def test_extracted_file_is_verified() -> None:
    path = sms_spam_path()
    assert path.name == "SMSSpamCollection"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == FILE_SHA256
    # a damaged copy is replaced by a fresh extraction
    path.write_text("ham\tdamaged\n", encoding="utf-8")
    assert sms_spam_path() == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == FILE_SHA256
    assert not list(path.parent.glob("*.tmp"))


def test_counts_and_columns(sms: pd.DataFrame) -> None:
    assert list(sms.columns) == ["Label", "Text"]
    assert len(sms) == 5574
    assert sms["Label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    assert sms.iloc[0].tolist() == [
        "ham",
        "Go until jurong point, crazy.. Available only in bugis n great world la e buffet... "
        "Cine there got amore wat...",
    ]
    assert sms.iloc[2]["Label"] == "spam"
    assert not sms["Text"].str.contains("\n").any()


def test_pandas_quoting_pitfall(sms: pd.DataFrame) -> None:
    # What the book (and most tutorials) do: pandas reads a leading `"` as the start of a quoted
    # field, and a message with an unbalanced quote swallows the two lines after it.
    naive = pd.read_csv(sms_spam_path(), sep="\t", header=None, names=["Label", "Text"])
    assert len(naive) == 5572
    assert naive["Label"].value_counts().to_dict() == {"ham": 4825, "spam": 747}
    merged = naive[naive["Text"].str.contains("\n")]
    assert len(merged) == 1
    assert (
        "\nham\tYeah, give me a call if you've got a minute\nham\tHI BABE" in merged.iloc[0]["Text"]
    )

    # ours: each of those lines is its own message, the quote is part of the text
    i = sms.index[sms["Text"].str.startswith('"Keep ur problems in ur heart')][0]
    assert sms.loc[i, "Text"].endswith("-VIVEKANAND- G 9t.. SD..")
    assert sms.loc[i + 1].tolist() == ["ham", "Yeah, give me a call if you've got a minute"]
    assert sms.loc[i + 2, "Text"].startswith('"HI BABE UAWAKE?')


def test_load_user_file_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "sms.txt"
    good.write_text('ham\t"quoted start\nspam\tWIN\tnow\r\n\n', encoding="utf-8")
    df = load_sms_spam(good)
    assert df.values.tolist() == [["ham", '"quoted start'], ["spam", "WIN\tnow"]]
    bad = tmp_path / "bad.txt"
    bad.write_text("ham\tfine\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 has no tab"):
        load_sms_spam(bad)


def test_balance(sms: pd.DataFrame) -> None:
    balanced = balance(sms, seed=123)
    assert balanced["Label"].value_counts().to_dict() == {"ham": 747, "spam": 747}
    assert balanced.index.tolist() == list(range(1494))
    # every spam kept in order, the ham a sample of the ham
    assert balanced["Text"].iloc[747:].tolist() == sms[sms["Label"] == "spam"]["Text"].tolist()
    assert set(balanced["Text"].iloc[:747]) <= set(sms[sms["Label"] == "ham"]["Text"])
    assert balanced.equals(balance(sms, seed=123))
    assert not balanced.equals(balance(sms, seed=7))
    assert len(sms) == 5574  # the input is not modified


def test_split_sizes_and_determinism(sms: pd.DataFrame, splits) -> None:
    train, val, test = splits
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    for part in splits:
        assert part.index.tolist() == list(range(len(part)))
    together = pd.concat(splits)
    balanced = balance(sms, seed=123)
    assert sorted(map(tuple, together.values.tolist())) == sorted(
        map(tuple, balanced.values.tolist())
    )
    again = split(balanced, (0.7, 0.1), seed=123)
    assert all(a.equals(b) for a, b in zip(splits, again, strict=True))
    other = split(balanced, (0.7, 0.1), seed=1)
    assert not train.equals(other[0])
    assert [len(p) for p in split(balanced, (0.5, 0.5), seed=0)] == [747, 747, 0]


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.3), (0.0, 0.1), (0.7, -0.1), (0.7,), (0.5, 0.2, 0.3)]
)
def test_split_rejects_bad_fractions(sms: pd.DataFrame, fractions) -> None:
    with pytest.raises(ValueError, match="fractions"):
        split(sms, fractions, seed=0)


def test_save_and_load_splits_round_trip(splits, tmp_path: Path) -> None:
    paths = save_splits(*splits, tmp_path / "sms")
    assert {k: p.name for k, p in paths.items()} == {
        "train": "train.csv",
        "validation": "validation.csv",
        "test": "test.csv",
    }
    assert sorted(p.name for p in (tmp_path / "sms").iterdir()) == [
        "test.csv",
        "train.csv",
        "validation.csv",
    ]
    for original, loaded in zip(splits, load_splits(tmp_path / "sms"), strict=True):
        pd.testing.assert_frame_equal(original, loaded)
    # quotes, tabs, trailing spaces, and messages pandas would read as NaN or numbers survive
    tricky = pd.DataFrame(
        {"Label": ["ham"] * 5, "Text": ['"Hi" she said', "a\tb", "ok ", "NA", "645"]}
    )
    save_splits(tricky, tricky, tricky, tmp_path / "tricky")
    pd.testing.assert_frame_equal(read_split(tmp_path / "tricky" / "test.csv"), tricky)


def test_label_ids() -> None:
    assert [label_id(x) for x in ("ham", "spam", 0, 1, np.int64(1))] == [0, 1, 0, 1, 1]
    for bad in ("Ham", "", 2, -1, True, None, 1.0):
        with pytest.raises(ValueError, match="unknown label"):
            label_id(bad)


def test_dataset_by_hand() -> None:
    tok = get_tokenizer()
    df = pd.DataFrame({"Label": ["ham", "spam"], "Text": ["Hello, world", "Hello"]})
    ds = SpamDataset(df, tok)
    assert ds.max_length == 3 and len(ds) == 2
    x, y = ds[0]
    assert x.dtype == y.dtype == torch.long and x.shape == (3,) and y.shape == ()
    assert x.tolist() == [15496, 11, 995] and y.item() == 0
    assert ds[1][0].tolist() == [15496, 50256, 50256] and ds[1][1].item() == 1
    assert ds.lengths.tolist() == [3, 1]

    with_len = SpamDataset(df, tok, return_length=True)
    assert [t.tolist() for t in with_len[1]] == [[15496, 50256, 50256], 1, 1]
    # a literal "<|endoftext|>" in a message is text, not the padding token
    eot = SpamDataset(pd.DataFrame({"Label": [0], "Text": ["<|endoftext|>"]}), tok)
    assert 50256 not in eot[0][0].tolist()


def test_dataset_truncation_and_context_length() -> None:
    tok = get_tokenizer()
    df = pd.DataFrame({"Label": ["spam", "ham"], "Text": ["Hello, world", "Hello"]})
    short = SpamDataset(df, tok, max_length=2, pad_token_id=0, return_length=True)
    assert short.input_ids.tolist() == [[15496, 11], [15496, 0]]
    assert short.lengths.tolist() == [2, 1]
    capped = SpamDataset(df, tok, context_length=2)  # default never exceeds the context
    assert capped.max_length == 2
    assert SpamDataset(df, tok, context_length=None).max_length == 3
    with pytest.raises(
        ValueError, match=r"max_length \(5\) exceeds the model's context_length \(4\)"
    ):
        SpamDataset(df, tok, max_length=5, context_length=4)
    with pytest.raises(ValueError, match="max_length must be positive"):
        SpamDataset(df, tok, max_length=0)


def test_dataset_on_the_splits(splits, tmp_path: Path) -> None:
    tok = get_tokenizer()
    train, val, test = splits
    paths = save_splits(train, val, test, tmp_path)
    train_ds = SpamDataset(paths["train"], tok)
    longest = max(len(tok.encode(t)) for t in train["Text"])
    assert train_ds.max_length == longest
    assert train_ds.input_ids.shape == (1045, longest)
    assert train_ds.labels.tolist() == [{"ham": 0, "spam": 1}[v] for v in train["Label"]]
    assert int(train_ds.labels.sum()) == int((train["Label"] == "spam").sum())
    n = int(train_ds.lengths[0])
    assert train_ds[0][0][:n].tolist() == tok.encode(train["Text"][0])[:n]
    assert (train_ds[0][0][n:] == 50256).all()
    val_ds = SpamDataset(val, tok, max_length=train_ds.max_length)
    assert val_ds.input_ids.shape == (149, longest)
    assert (val_ds.lengths <= longest).all()


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"Label": ["ham"]}), r"missing column\(s\) \['Text'\]"),
        (
            pd.DataFrame({"label": ["ham"], "text": ["hi"]}),
            r"missing column\(s\) \['Label', 'Text'\]",
        ),
        (pd.DataFrame({"Label": ["ham", "ham"], "Text": ["hi", ""]}), "row 1: Text is empty"),
        (pd.DataFrame({"Label": ["ham", "spam"], "Text": ["hi", "  "]}), "row 1: Text is empty"),
        (
            pd.DataFrame({"Label": ["ham", "ham"], "Text": ["hi", None]}),
            "row 1: Text must be a string",
        ),
        (pd.DataFrame({"Label": ["ham"], "Text": [np.nan]}), "row 0: Text must be a string"),
        (
            pd.DataFrame({"Label": ["ham", "eggs"], "Text": ["a", "b"]}),
            "row 1: unknown label 'eggs'",
        ),
        (pd.DataFrame({"Label": [0, 3], "Text": ["a", "b"]}), "row 1: unknown label 3"),
        (pd.DataFrame({"Label": [], "Text": []}), "no rows"),
    ],
)
def test_dataset_errors_name_the_row(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpamDataset(frame, get_tokenizer())


def test_dataset_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text('Label,Text\nham,fine\nspam,""\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.csv: row 1: Text is empty"):
        SpamDataset(path, get_tokenizer())


# --- probes of the hardening pass -------------------------------------------------------------


def test_junk_cached_zip_is_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe: a junk cached zip gave a bare BadZipFile, and fetch kept it."""
    from gpt2lib.data.spam import URL
    from gpt2lib.download import cache_path

    monkeypatch.setenv("GPT2LIB_HOME", str(tmp_path / "home"))
    path = sms_spam_path()
    zip_path = cache_path(URL)
    zip_path.write_bytes(b"\0" * zip_path.stat().st_size)  # same size: the record still fits
    path.unlink()
    assert sms_spam_path() == path and hashlib.sha256(path.read_bytes()).hexdigest() == FILE_SHA256
    assert zip_path.read_bytes()[:2] == b"PK"  # the zip was downloaded again


def test_non_utf8_sms_file_names_the_file(tmp_path: Path) -> None:
    """Probe: a non-UTF-8 SMS file gave a bare UnicodeDecodeError."""
    from gpt2lib.files import FileFormatError

    bad = tmp_path / "sms.txt"
    bad.write_bytes(b"ham\tcaf\xe9 at 5?\n")
    with pytest.raises(FileFormatError, match=r"sms\.txt: the SMS data file is not UTF-8"):
        load_sms_spam(bad)


def test_a_byte_order_mark_is_not_part_of_the_first_label(tmp_path: Path) -> None:
    """Probe: a UTF-8 BOM made the first label '\\ufeffham'."""
    with_bom = tmp_path / "sms.txt"
    with_bom.write_bytes("ham\tHello\nspam\tWIN\n".encode("utf-8-sig"))
    assert load_sms_spam(with_bom)["Label"].tolist() == ["ham", "spam"]
    split_file = tmp_path / "train.csv"
    split_file.write_bytes("Label,Text\nham,Hello\n".encode("utf-8-sig"))
    from gpt2lib.data.spam import read_split

    assert read_split(split_file).columns.tolist() == ["Label", "Text"]


def test_an_archive_whose_file_has_another_size_is_named(tmp_path: Path) -> None:
    import zipfile

    from gpt2lib.data.spam import FILE_NAME, FILE_SIZE, _extract
    from gpt2lib.files import FileFormatError

    archive = tmp_path / "sms.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(FILE_NAME, "ham\tshort\n")
    with pytest.raises(FileFormatError, match=rf"has 10 bytes, expected {FILE_SIZE:,}"):
        _extract(archive)
