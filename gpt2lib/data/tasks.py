"""A procedural instruction set: tasks whose right answer follows from the input alone."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

# one GPT-2 token each, with and without a leading space; few, so that each occurs often
WORDS = (
    "apple", "river", "stone", "cloud", "bread", "horse", "chair", "paper", "green", "table",
    "water", "night",
)  # fmt: skip
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "old": "new", "fast": "slow", "early": "late",
    "high": "low", "left": "right", "open": "closed", "dark": "light", "hard": "soft",
    "long": "short", "rich": "poor", "full": "empty",
}  # fmt: skip
NUMBERS = range(1, 31)  # one token each

Record = dict[str, str]
Task = Callable[[random.Random], tuple[str, str, str]]  # rng -> (instruction, input, output)


def _words(rng: random.Random, low: int, high: int) -> list[str]:
    return rng.sample(WORDS, rng.randint(low, high))


def _repeat(rng: random.Random) -> tuple[str, str, str]:
    words = " ".join(_words(rng, 2, 4))
    return "Repeat the words.", words, words


def _first_word(rng: random.Random) -> tuple[str, str, str]:
    words = _words(rng, 3, 5)
    return "Write the first word.", " ".join(words), words[0]


def _last_word(rng: random.Random) -> tuple[str, str, str]:
    words = _words(rng, 3, 5)
    return "Write the last word.", " ".join(words), words[-1]


def _reverse(rng: random.Random) -> tuple[str, str, str]:
    words = _words(rng, 3, 3)
    return "Write the words in reverse order.", " ".join(words), " ".join(reversed(words))


def _count(rng: random.Random) -> tuple[str, str, str]:
    words = _words(rng, 2, 7)
    return "How many words are there?", " ".join(words), str(len(words))


def _capitals(rng: random.Random) -> tuple[str, str, str]:
    words = " ".join(_words(rng, 2, 3))
    return "Write the words in capital letters.", words, words.upper()


def _opposites(rng: random.Random) -> tuple[str, str, str]:
    words = rng.sample(sorted(OPPOSITES), rng.randint(2, 3))
    return (
        "Write the opposite of each word.",
        " ".join(words),
        " ".join(OPPOSITES[w] for w in words),
    )


def _contains(rng: random.Random) -> tuple[str, str, str]:
    words = _words(rng, 4, 4)
    present = rng.random() < 0.5
    word = rng.choice(words) if present else rng.choice([w for w in WORDS if w not in words])
    return f"Is the word {word} in the list?", " ".join(words), "yes" if present else "no"


def _larger(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.sample(NUMBERS, 2)
    return "Which number is larger?", f"{a}\n{b}", str(max(a, b))


KINDS: dict[str, Task] = {
    "repeat": _repeat,
    "first word": _first_word,
    "last word": _last_word,
    "reverse": _reverse,
    "count words": _count,
    "capitals": _capitals,
    "opposites": _opposites,
    "contains": _contains,
    "larger number": _larger,
}


def make_records(kind: str, n: int, rng: random.Random) -> list[Record]:
    """``n`` distinct records of ``kind`` (distinct ``(instruction, input)``), drawn from ``rng``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    records: dict[tuple[str, str], Record] = {}
    for _ in range(100 * n):
        if len(records) == n:
            break
        instruction, input_text, output = KINDS[kind](rng)
        records.setdefault(
            (instruction, input_text),
            {"instruction": instruction, "input": input_text, "output": output, "kind": kind},
        )
    if len(records) < n:
        raise ValueError(f"kind {kind!r} has fewer than {n} distinct records")
    return list(records.values())


def make_splits(
    seed: int = 123, n_train: int = 800, n_val: int = 10, n_test: int = 20
) -> tuple[list[Record], list[Record], list[Record]]:
    """``(train, val, test)`` with ``n_train``, ``n_val`` and ``n_test`` records of every kind,
    each split shuffled; deterministic for a ``seed``. Records are distinct across the splits,
    so no test prompt is ever trained on."""
    if min(n_train, n_val, n_test) < 0:
        raise ValueError(f"split sizes must be >= 0, got {n_train}, {n_val}, {n_test}")
    rng = random.Random(seed)
    train: list[Record] = []
    val: list[Record] = []
    test: list[Record] = []
    for kind in KINDS:
        records = make_records(kind, n_train + n_val + n_test, rng)
        test += records[:n_test]
        val += records[n_test : n_test + n_val]
        train += records[n_test + n_val :]
    for split in (train, val, test):
        rng.shuffle(split)
    return train, val, test


def exact_match(response: str, record: Record) -> bool:
    """Whether ``response`` is the record's output (ignoring surrounding space and a final full
    stop)."""
    return response.strip().rstrip(".").strip() == record["output"]


def exact_match_by_kind(records: Sequence[Record], responses: Sequence[str]) -> dict[str, float]:
    """The share of exact answers (:func:`exact_match`) per kind, in :data:`KINDS` order, and
    over all records as ``"all"``."""
    if len(records) != len(responses):
        raise ValueError(f"{len(records)} records but {len(responses)} responses")
    right: dict[str, list[bool]] = {}
    for record, response in zip(records, responses, strict=True):
        right.setdefault(record["kind"], []).append(exact_match(response, record))
    shares = {kind: sum(right[kind]) / len(right[kind]) for kind in KINDS if kind in right}
    shares["all"] = sum(map(sum, right.values())) / len(records) if records else float("nan")
    return shares
