"""gpt2lib.data.tasks: procedural instructions whose answers follow from their inputs."""

from __future__ import annotations

import random

import pytest

from gpt2lib.data.instructions import format_input
from gpt2lib.data.tasks import (
    KINDS,
    OPPOSITES,
    WORDS,
    exact_match,
    exact_match_by_kind,
    make_records,
    make_splits,
)


def test_splits_are_seeded_sized_and_disjoint():
    train, val, test = make_splits()
    assert (len(train), len(val), len(test)) == (800 * len(KINDS), 10 * len(KINDS), 20 * len(KINDS))
    assert make_splits() == (train, val, test)  # deterministic
    assert make_splits(seed=7)[2] != test
    key = lambda r: (r["instruction"], r["input"])  # noqa: E731
    seen = {key(r) for r in train + val}
    assert not any(key(r) in seen for r in test)
    assert len({key(r) for r in train}) == len(train)
    for split in (train, val, test):
        assert {r["kind"] for r in split} == set(KINDS)
        assert all(set(r) == {"instruction", "input", "output", "kind"} for r in split)


def expected_output(kind: str, record: dict) -> str:
    """The answer, computed here from the input, independently of the generator."""
    words = record["input"].split()
    if kind == "repeat":
        return record["input"]
    if kind in ("first word", "last word"):
        return words[0] if kind == "first word" else words[-1]
    if kind == "reverse":
        return " ".join(reversed(words))
    if kind == "count words":
        return str(len(words))
    if kind == "capitals":
        return record["input"].upper()
    if kind == "opposites":
        return " ".join(OPPOSITES[w] for w in words)
    if kind == "contains":
        return "yes" if record["instruction"].split()[3] in words else "no"
    return str(max(int(words[0]), int(words[-1])))  # larger number: "a\nb"


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_answer_follows_from_the_input(kind):
    records = make_records(kind, 50, random.Random(0))
    for r in records:
        assert r["output"] == expected_output(kind, r), r
        assert format_input(r).endswith(f"### Input:\n{r['input']}")
    if kind == "contains":  # both answers occur
        assert {r["output"] for r in records} == {"yes", "no"}


def test_words_are_single_gpt2_tokens():
    from gpt2lib.tokenizer import get_tokenizer

    tokenizer = get_tokenizer()
    for word in WORDS:
        assert len(tokenizer.encode(word)) == len(tokenizer.encode(" " + word)) == 1, word


def test_exact_match_and_bad_input():
    record = {"instruction": "Write the last word.", "input": "cat dog", "output": "dog"}
    assert exact_match(" dog.", record) and exact_match("dog", record)
    assert not exact_match("dogs", record) and not exact_match("The last word is dog.", record)
    with pytest.raises(ValueError, match="unknown kind 'sort'"):
        make_records("sort", 3, random.Random(0))
    with pytest.raises(ValueError, match="fewer than"):
        make_records("opposites", 10_000, random.Random(0))
    with pytest.raises(ValueError, match=">= 0"):
        make_splits(n_val=-1)


def test_exact_match_by_kind_counts_per_kind_and_overall():
    _, _, test = make_splits()
    answers = [r["output"] if r["kind"] == "reverse" else "wrong" for r in test]
    shares = exact_match_by_kind(test, answers)
    assert list(shares)[:-1] == list(KINDS) and shares["reverse"] == 1.0
    assert shares["repeat"] == 0.0 and shares["all"] == pytest.approx(1 / len(KINDS))
    with pytest.raises(ValueError, match="2 records but 1 responses"):
        exact_match_by_kind(test[:2], ["x"])
