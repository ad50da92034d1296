"""Calibration of judges: known answers, the paired bootstrap, rank agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpt2lib.calibration import (
    calibration_scores,
    mean,
    other_references,
    paired_bootstrap,
    rank_correlation,
)
from gpt2lib.judge import RougeLJudge

RECORDS = [
    {"instruction": "Name a colour.", "input": "", "output": "Blue is a colour."},
    {"instruction": "Name a fruit.", "input": "", "output": "An apple is a fruit."},
    {"instruction": "Name a city.", "input": "", "output": "Paris is a city in France."},
    {"instruction": "Name a planet.", "input": "", "output": "Mars is the fourth planet."},
]


def test_other_references_pairs_every_record_with_another():
    other = other_references(RECORDS, seed=3)
    assert sorted(other) == sorted(r["output"] for r in RECORDS)  # a permutation
    assert all(o != r["output"] for o, r in zip(other, RECORDS, strict=True))  # no fixed point
    assert other == other_references(RECORDS, seed=3)
    with pytest.raises(ValueError, match="two records"):
        other_references(RECORDS[:1])


def test_calibration_scores_of_known_answers():
    judge = RougeLJudge()
    answers = {"model": ["Blue.", "Apple.", "Lyon is a city.", ""]}
    scores = calibration_scores(judge, RECORDS, answers)
    assert list(scores) == ["empty", "reference", "unrelated reference", "model"]
    assert scores["empty"] == [0, 0, 0, 0] and scores["reference"] == [100] * 4
    assert mean(scores["unrelated reference"]) < 50
    assert scores["model"][3] == 0 and scores["model"][2] > 0
    with pytest.raises(ValueError, match="3 answers for 4 records"):
        calibration_scores(judge, RECORDS, {"short": ["a", "b", "c"]})


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 50, 200).tolist()
    better = [b + 10 + int(d) for b, d in zip(base, rng.integers(-5, 6, 200), strict=True)]
    diff, low, high = paired_bootstrap(base, better, resamples=2000)
    assert low < diff < high and 9 < low and high < 11
    assert paired_bootstrap(base, better, resamples=2000) == (diff, low, high)  # seeded
    same = paired_bootstrap(base, base, resamples=500)
    assert same == (0.0, 0.0, 0.0)
    assert paired_bootstrap([1, None, 3], [2, 5, None])[0] == 1.0  # only prompts both scored
    with pytest.raises(ValueError, match="no prompt"):
        paired_bootstrap([None], [1])


def test_rank_correlation_is_spearman():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone
    # ties share their average rank: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4)
    expected = np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1]
    assert rank_correlation([5, 5, 6, 7], [1, 2, 3, 4]) == pytest.approx(expected)
    assert rank_correlation([1, None, 3, 2], [1, 9, 3, 2]) == pytest.approx(1.0)
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))


def test_roc_auc_counts_pairs_ordered_right():
    from gpt2lib.calibration import roc_auc

    assert roc_auc([90, 80, 10, 0], [True, True, False, False]) == 1.0
    assert roc_auc([0, 10, 80, 90], [True, True, False, False]) == 0.0
    assert roc_auc([50, 50, 50, 50], [True, False, True, False]) == 0.5  # ties count half
    # by hand: right 70, 30; wrong 50, 10, None -> pairs (70>50, 70>10, 30<50, 30>10): 3 of 4
    assert roc_auc([70, 30, 50, 10, None], [True, True, False, False, False]) == 0.75
    with pytest.raises(ValueError, match="both right and wrong"):
        roc_auc([1, 2], [True, True])


def test_best_threshold_finds_the_best_cut():
    from gpt2lib.calibration import best_threshold

    assert best_threshold([90, 80, 10, 0], [True, True, False, False]) == (1.0, 80.0)
    # 70 right, 60 wrong, 50 right, 10 wrong: the best cut, >= 50, gets 3 of 4
    assert best_threshold([70, 60, 50, 10], [True, False, True, False]) == (0.75, 50.0)
    accuracy, threshold = best_threshold([5, 5], [True, False])
    assert accuracy == 0.5 and threshold == float("inf")  # no cut beats calling nothing right
