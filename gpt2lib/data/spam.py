"""The SMS Spam Collection (Almeida, Gómez Hidalgo and Yamakami, 2011; UCI id 228, CC BY 4.0)."""

from __future__ import annotations

import hashlib
import numbers
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch.utils.data import Dataset

from ..download import cache_dir, fetch
from ..files import FileFormatError, atomic_write_bytes, read_text, sha256_file

if TYPE_CHECKING:
    import tiktoken

URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
# The zip's bytes differ between copies (UCI's own carries a readme, the offline mirror's does
# not), so the file inside is what is verified.
FILE_NAME = "SMSSpamCollection"
FILE_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
FILE_SIZE = 477_907

LABELS: dict[str, int] = {"ham": 0, "spam": 1}
COLUMNS = ("Label", "Text")
SPLIT_NAMES = ("train", "validation", "test")


def _extract(archive: Path) -> bytes:
    """The verified bytes of ``SMSSpamCollection`` inside ``archive``, or a FileFormatError."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if m.rsplit("/", 1)[-1] == FILE_NAME]
            if not members:
                raise FileFormatError(
                    archive, f"the zip has no {FILE_NAME}; it holds {zf.namelist()}"
                )
            data = zf.read(members[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise FileFormatError(archive, f"not a readable zip archive ({err})") from None
    if len(data) != FILE_SIZE:
        raise FileFormatError(
            archive,
            f"its {FILE_NAME} has {len(data):,} bytes, expected {FILE_SIZE:,} (a truncated or "
            "another version of the file)",
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != FILE_SHA256:
        raise FileFormatError(
            archive, f"its {FILE_NAME} has sha256 {digest}, expected {FILE_SHA256}"
        )
    return data


def sms_spam_path() -> Path:
    """Download the UCI zip (once), extract ``SMSSpamCollection`` and verify it; return its path.

    A cached zip that is damaged (not a zip, or the file inside fails its sha256) is fetched
    again once; if the fresh one fails too, the error names it.
    """
    target = cache_dir() / "data" / "sms-spam" / FILE_NAME
    if target.is_file() and sha256_file(target) == FILE_SHA256:
        return target
    try:
        data = _extract(fetch(URL))
    except FileFormatError:
        data = _extract(fetch(URL, refresh=True))
    atomic_write_bytes(target, data)
    return target


def load_sms_spam(path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The collection as a DataFrame with columns ``Label`` and ``Text``, one row per line.

    With no ``path`` the UCI file is downloaded and verified (5,574 rows: 4,827 ham, 747 spam).
    Each line is split at its first tab; quotes are part of the message.
    """
    path = Path(path) if path is not None else sms_spam_path()
    rows: list[tuple[str, str]] = []
    for lineno, line in enumerate(read_text(path, "SMS data file").split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line:
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise FileFormatError(
                path, f"line {lineno} has no tab between label and text: {line!r}"
            )
        rows.append((label, text))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def balance(df: pd.DataFrame, seed: int = 123) -> pd.DataFrame:
    """Undersample every label to the size of the smallest class (747 ham + 747 spam).

    Labels in sorted order; a class larger than the smallest is sampled with ``seed``, the
    smallest is kept whole and in order.
    """
    _check_columns(df)
    counts = df["Label"].value_counts()
    n = int(counts.min())
    parts = [
        df[df["Label"] == label].sample(n, random_state=seed)
        if counts[label] > n
        else df[df["Label"] == label]
        for label in sorted(counts.index)
    ]
    return pd.concat(parts).reset_index(drop=True)


def split(
    df: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.1), seed: int = 123
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Shuffle with ``seed`` and cut into train / validation / test.

    ``fractions`` are the train and validation shares; the test set is the rest. Sizes are
    ``int(n * f_train)`` and ``int(n * f_val)``: 1045 / 149 / 300 for the 1,494 balanced rows.
    """
    f_train, f_val = _check_fractions(fractions)
    shuffled = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    train_end = int(len(shuffled) * f_train)
    val_end = train_end + int(len(shuffled) * f_val)
    return (
        shuffled.iloc[:train_end].reset_index(drop=True),
        shuffled.iloc[train_end:val_end].reset_index(drop=True),
        shuffled.iloc[val_end:].reset_index(drop=True),
    )


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float]:
    if len(fractions) != 2:
        raise ValueError(f"fractions must be (train, validation), got {tuple(fractions)}")
    f_train, f_val = (float(f) for f in fractions)
    if f_train <= 0 or f_val < 0 or f_train + f_val > 1:
        raise ValueError(
            f"fractions {tuple(fractions)} must satisfy train > 0, validation >= 0, "
            "train + validation <= 1"
        )
    return f_train, f_val


def save_splits(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    directory: str | os.PathLike[str],
) -> dict[str, Path]:
    """Write ``train.csv``, ``validation.csv`` and ``test.csv`` (atomically) into ``directory``."""
    paths = {}
    for name, df in zip(SPLIT_NAMES, (train, validation, test), strict=True):
        path = Path(directory) / f"{name}.csv"
        atomic_write_bytes(path, df.to_csv(index=False).encode("utf-8"))
        paths[name] = path
    return paths


def read_split(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV written by :func:`save_splits`; messages stay strings (``"NA"`` is not NaN)."""
    return pd.read_csv(path, dtype={"Text": str}, keep_default_na=False, encoding="utf-8-sig")


def load_splits(
    directory: str | os.PathLike[str],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read back the three CSVs :func:`save_splits` wrote."""
    train, val, test = (read_split(Path(directory) / f"{n}.csv") for n in SPLIT_NAMES)
    return train, val, test


def _check_columns(df: pd.DataFrame, source: str = "data") -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(df.columns)}")


def label_id(label: object) -> int:
    """``"ham"`` -> 0, ``"spam"`` -> 1; the integers 0 and 1 pass through."""
    if isinstance(label, str):
        if label in LABELS:
            return LABELS[label]
    elif isinstance(label, numbers.Integral) and not isinstance(label, bool):
        if int(label) in LABELS.values():
            return int(label)
    raise ValueError(f"unknown label {label!r}; expected one of {list(LABELS)} or 0/1")


class SpamDataset(Dataset[tuple[torch.Tensor, ...]]):
    """SMS messages as fixed-length token IDs with their labels (ham 0, spam 1).

    Each message is tokenized (a literal ``<|endoftext|>`` in a message is plain text, not token
    50256), cut to ``max_length`` tokens and right-padded with ``pad_token_id``. ``max_length``
    defaults to the longest message of ``data``, capped at ``context_length``; pass the training
    set's ``max_length`` to the validation and test sets.

    Item ``i`` is ``(input_ids, label)``: a ``long`` tensor of shape ``(max_length,)`` and a
    ``long`` scalar. A classifier that reads the output at the last *real* token needs each
    message's length: ``lengths[i]`` holds it (after truncation), and ``return_length=True``
    makes items ``(input_ids, label, length)`` so a DataLoader batches it too.
    """

    def __init__(
        self,
        data: pd.DataFrame | str | os.PathLike[str],
        tokenizer: tiktoken.Encoding,
        max_length: int | None = None,
        pad_token_id: int = 50256,
        context_length: int | None = 1024,
        return_length: bool = False,
    ) -> None:
        source = "data" if isinstance(data, pd.DataFrame) else str(data)
        df = data if isinstance(data, pd.DataFrame) else read_split(data)
        _check_columns(df, source)
        encoded: list[list[int]] = []
        labels: list[int] = []
        for row, (label, text) in enumerate(zip(df["Label"], df["Text"], strict=True)):
            if not isinstance(text, str):
                raise ValueError(f"{source}: row {row}: Text must be a string, got {text!r}")
            if not text.strip():
                raise ValueError(f"{source}: row {row}: Text is empty")
            try:
                labels.append(label_id(label))
            except ValueError as err:
                raise ValueError(f"{source}: row {row}: {err}") from None
            encoded.append(tokenizer.encode(text, disallowed_special=()))
        if not encoded:
            raise ValueError(f"{source}: no rows")

        longest = max(len(ids) for ids in encoded)
        if max_length is None:
            max_length = longest if context_length is None else min(longest, context_length)
        elif max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        elif context_length is not None and max_length > context_length:
            raise ValueError(
                f"max_length ({max_length}) exceeds the model's context_length ({context_length})"
            )
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.return_length = return_length
        self.input_ids = torch.full((len(encoded), max_length), pad_token_id, dtype=torch.long)
        self.lengths = torch.tensor([min(len(ids), max_length) for ids in encoded])
        for i, ids in enumerate(encoded):
            self.input_ids[i, : self.lengths[i]] = torch.tensor(ids[:max_length])
        self.labels = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if self.return_length:
            return self.input_ids[index], self.labels[index], self.lengths[index]
        return self.input_ids[index], self.labels[index]
