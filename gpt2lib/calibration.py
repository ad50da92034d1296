"""Does a judge's 0-100 scale mean something? Known answers, paired differences, agreement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .judge import Judge, shuffled_cycle

Scores = list[int | None]


def other_references(records: Sequence[Mapping[str, Any]], seed: int = 0) -> list[str]:
    """For each record, the reference answer of another record (a seeded derangement)."""
    if len(records) < 2:
        raise ValueError("need at least two records to pair each with another one")
    other = [""] * len(records)
    for i, j in shuffled_cycle(len(records), seed):  # the pairing of the embedding baseline
        other[i] = records[j]["output"]
    return other


def calibration_scores(
    judge: Judge,
    records: Sequence[Mapping[str, Any]],
    responses: Mapping[str, Sequence[str]],
) -> dict[str, Scores]:
    """``judge``'s scores of known answers and of each named list of ``responses``, per record.

    Keys: ``"empty"`` (no answer), ``"reference"`` (the reference itself), ``"unrelated
    reference"`` (:func:`other_references`), then those of ``responses`` (e.g. ``{"base": ...,
    "fine-tuned": ...}``, one answer per record).
    """
    answers: dict[str, Sequence[str]] = {
        "empty": [""] * len(records),
        "reference": [r["output"] for r in records],
        "unrelated reference": other_references(records),
        **responses,
    }
    out = {}
    for name, texts in answers.items():
        if len(texts) != len(records):
            raise ValueError(f"{name!r}: {len(texts)} answers for {len(records)} records")
        out[name] = [
            judge.score({**r, "model_response": t}) for r, t in zip(records, texts, strict=True)
        ]
    return out


def mean(scores: Scores) -> float | None:
    """Mean of the valid (not None) scores; None if there are none."""
    valid = [s for s in scores if s is not None]
    return float(np.mean(valid)) if valid else None


def paired_bootstrap(
    a: Scores, b: Scores, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``b - a`` over the prompts both scored, and its bootstrap confidence interval.

    Resamples the prompts with replacement ``resamples`` times (a seeded NumPy generator) and
    returns ``(mean difference, low, high)``, the percentile interval at ``level``.
    """
    diffs = np.array([y - x for x, y in zip(a, b, strict=True) if x is not None and y is not None])
    if diffs.size == 0:
        raise ValueError("no prompt has a valid score in both lists")
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, (resamples, diffs.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(diffs.mean()), float(low), float(high)


def rank_correlation(x: Sequence[float | None], y: Sequence[float | None]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` over the pairs where both are valid
    (average ranks for ties); NaN when either side is constant."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    if len(pairs) < 2:
        return float("nan")
    ranks = [_ranks([p[i] for p in pairs]) for i in (0, 1)]
    if ranks[0].std() == 0 or ranks[1].std() == 0:
        return float("nan")
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    values = np.asarray(values, dtype=float)
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def _valid(scores: Sequence[float | None], right: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(s, bool(r)) for s, r in zip(scores, right, strict=True) if s is not None]
    values = np.array([p[0] for p in pairs], dtype=float)
    labels = np.array([p[1] for p in pairs], dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError("need both right and wrong answers among the scored ones")
    return values, labels


def roc_auc(scores: Sequence[float | None], right: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` as a test for ``right``: the share of (right,
    wrong) pairs in which the right answer scores higher, ties counting half (the
    Mann-Whitney U statistic over its maximum). 1 separates perfectly, 0.5 is chance. Answers
    without a score (None) are left out."""
    values, labels = _valid(scores, right)
    ranks = _ranks(values)
    n_right, n_wrong = labels.sum(), (~labels).sum()
    u = ranks[labels].sum() - n_right * (n_right + 1) / 2
    return float(u / (n_right * n_wrong))


def best_threshold(scores: Sequence[float | None], right: Sequence[bool]) -> tuple[float, float]:
    """``(accuracy, threshold)``: the best accuracy of the rule "right when score >=
    threshold" over every threshold (the lowest such threshold when several tie). Answers
    without a score (None) are left out."""
    values, labels = _valid(scores, right)
    best = (float(np.mean(~labels)), float("inf"))  # nothing is called right
    for t in np.unique(values):
        accuracy = float(np.mean((values >= t) == labels))
        if accuracy > best[0]:
            best = (accuracy, float(t))
    return best
