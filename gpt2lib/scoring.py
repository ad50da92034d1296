"""Scoring a data set with a judge: every record scored, the scores saved as they come.

:func:`score_responses` scores a list of records with any :class:`~gpt2lib.judge.Judge` and
writes ``<responses>-scores.json`` (:func:`scores_path`) atomically after every record, so an
interrupted run resumes where it stopped; :func:`summarize_scores` gives the counts and the
mean, median, minimum and maximum of the valid scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .files import atomic_write_text
from .judge import ENTRY_KEYS, Judge, check_entry


def summarize_scores(scores: Sequence[int | None], judge_name: str = "") -> dict[str, Any]:
    """``n``, ``valid``, ``invalid`` counts and ``mean``/``median``/``min``/``max`` of valid ones."""
    valid = [s for s in scores if s is not None]
    stats: dict[str, Any] = {"mean": None, "median": None, "min": None, "max": None}
    if valid:
        stats = {
            "mean": statistics.fmean(valid),
            "median": float(statistics.median(valid)),
            "min": min(valid),
            "max": max(valid),
        }
    counts = {"n": len(scores), "valid": len(valid), "invalid": len(scores) - len(valid)}
    return {"judge": judge_name, **counts, **stats}


def scores_path(responses_path: str | os.PathLike) -> Path:
    """Where :func:`score_responses` saves scores: ``<stem>-scores.json`` next to the responses."""
    path = Path(responses_path)
    return path.with_name(f"{path.stem}-scores.json")


def _records_sha256(records: Sequence[Mapping[str, Any]]) -> str:
    """A fingerprint of what is judged: the four fields of every record, in order."""
    data = [[str(r[k]) for k in ENTRY_KEYS] for r in records]
    return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()


def _finished_scores(path: Path, judge_name: str, fingerprint: str) -> list[int | None]:
    """The scores an earlier, possibly interrupted, run of the same judge on the same records
    saved in ``path``; empty when there is none (or the file is another judge's)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []  # unreadable: scored afresh, and the file is rewritten
    if not isinstance(saved, dict) or saved.get("records_sha256") != fingerprint:
        return []
    if (saved.get("summary") or {}).get("judge") != judge_name:
        return []
    scores = saved.get("scores")
    if not isinstance(scores, list) or not all(s is None or type(s) is int for s in scores):
        return []
    return scores


def score_responses(
    records: Iterable[Mapping[str, Any]],
    judge: Judge,
    path: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[list[int | None], dict[str, Any]]:
    """Score every record with ``judge``; return ``(scores, summary)``.

    ``None`` scores are invalid: left out of mean and median, counted in ``summary["invalid"]``.
    With ``path`` (the responses JSON file), ``{"summary", "scores", "complete",
    "records_sha256"}`` is written to :func:`scores_path` ``(path)`` atomically after *every*
    record, so a judge that fails at record k leaves the first k-1 scores saved. A rerun with
    the same judge (same ``name``) on the same records scores only the records still missing;
    another judge, or other records, start afresh and replace the file.
    """
    records = list(records)
    for i, entry in enumerate(records):
        try:
            check_entry(entry)
        except (TypeError, ValueError) as err:
            raise type(err)(f"record {i}: {err}") from None
    out = scores_path(path) if path is not None else None
    fingerprint = _records_sha256(records)
    scores: list[int | None] = []
    if out is not None and out.is_file():
        scores = _finished_scores(out, judge.name, fingerprint)[: len(records)]

    def save() -> None:
        if out is not None:
            data = {
                "summary": summarize_scores(scores, judge.name),
                "complete": len(scores) == len(records),
                "records_sha256": fingerprint,
                "scores": scores,
            }
            atomic_write_text(out, json.dumps(data, indent=2) + "\n")

    items: Iterable[Mapping[str, Any]] = records[len(scores) :]
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="Scoring", unit="entry", total=len(records), initial=len(scores))
    for entry in items:
        scores.append(judge.score(entry))
        save()
    if not records:
        save()
    return scores, summarize_scores(scores, judge.name)
