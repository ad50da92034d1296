"""Tests for gpt2lib.judge: the Ollama client against a fake Ollama server on 127.0.0.1, the
offline judges, the probe and score_responses."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpt2lib import judge as J

ENTRY = {
    "instruction": "Rewrite the sentence in passive voice.",
    "input": "The chef cooked the meal.",
    "output": "The meal was cooked by the chef.",
    "model_response": "The meal was cooked by the chef.",
}
FAKE_VERSION = "0.0.0-fake"
GARBAGE = "<reply that is not JSON>"
LIST_JSON = "<reply that is a JSON list>"


# --------------------------------------------------------------------------------------------
# A fake Ollama server: /api/version, /api/tags and /api/chat (streamed NDJSON or one JSON)
# --------------------------------------------------------------------------------------------


class FakeOllama:
    """Scripted replies for /api/chat; records every request body it receives."""

    def __init__(self) -> None:
        self.replies: deque[str] = deque()
        self.requests: list[dict] = []
        self.delay = 0.0
        self.models = {"llama3"}
        self.release = threading.Event()  # set at teardown to end a delayed reply early
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/api/version":
                    self._send(200, json.dumps({"version": FAKE_VERSION}).encode())
                elif self.path == "/api/tags":
                    models = [{"name": f"{m}:latest"} for m in sorted(server.models)]
                    self._send(200, json.dumps({"models": models}).encode())
                else:
                    self._send(404, b"404 page not found", "text/plain")

            def do_POST(self) -> None:
                if self.path != "/api/chat":
                    self._send(404, b"404 page not found", "text/plain")
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                model = body.get("model")
                if model not in server.models:
                    error = {"error": f'model "{model}" not found, try pulling it first'}
                    self._send(404, json.dumps(error).encode())
                    return
                content = server.replies.popleft() if server.replies else "50"
                if content == LIST_JSON:
                    self._send(200, b"[1, 2, 3]")
                    return
                if content == GARBAGE:
                    self._send(200, b"<html>not Ollama</html>", "text/html")
                    return
                if server.delay:
                    server.release.wait(server.delay)
                try:
                    if body.get("stream", True):  # Ollama streams unless told otherwise
                        self._stream(model, content)
                    else:
                        self._send(200, json.dumps(_chat_part(model, content, True)).encode())
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def _stream(self, model: str, content: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                pieces = [content[i : i + 3] for i in range(0, len(content), 3)]
                for piece in pieces:
                    self.wfile.write((json.dumps(_chat_part(model, piece, False)) + "\n").encode())
                    self.wfile.flush()
                self.wfile.write((json.dumps(_chat_part(model, "", True)) + "\n").encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _chat_part(model: str, content: str, done: bool) -> dict:
    part = {
        "model": model,
        "created_at": "2024-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        part.update(done_reason="stop", total_duration=1, eval_count=1)
    return part


@pytest.fixture
def fake_ollama():
    server = FakeOllama()
    server.thread.start()
    yield server
    server.close()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# OllamaJudge against the fake server
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_judge_scores_and_sends_deterministic_request(fake_ollama, stream):
    fake_ollama.replies.append("Score: 87\nThe response matches the reference.")
    judge = J.OllamaJudge(host=fake_ollama.url, timeout=5, stream=stream)
    assert judge.score(ENTRY) == 87
    assert judge.last_reply == "Score: 87\nThe response matches the reference."
    assert judge.last_replies == [judge.last_reply]

    (request,) = fake_ollama.requests
    assert request["model"] == "llama3"
    assert request["stream"] is stream
    assert request["options"] == {"seed": 123, "temperature": 0, "num_ctx": 2048}
    (message,) = request["messages"]
    assert message["role"] == "user"
    assert message["content"] == J.judge_prompt(ENTRY)
    for key in ("instruction", "input", "output"):
        assert ENTRY[key] in message["content"]
    assert "Reply with the score only" in message["content"]


def test_prompt_leaves_out_empty_input():
    prompt = J.judge_prompt({**ENTRY, "input": ""})
    assert "### Task input" not in prompt
    assert "### Task input" in J.judge_prompt(ENTRY)
    assert "Your previous reply could not be read" in J.judge_prompt(ENTRY, strict=True)


def test_reply_without_number_is_retried_then_invalid(fake_ollama):
    fake_ollama.replies.extend(["Excellent work!", "I cannot decide."])
    judge = J.OllamaJudge(host=fake_ollama.url, timeout=5)
    assert judge.score(ENTRY) is None
    assert judge.last_replies == ["Excellent work!", "I cannot decide."]
    first, second = (r["messages"][0]["content"] for r in fake_ollama.requests)
    assert first == J.judge_prompt(ENTRY)
    assert second == J.judge_prompt(ENTRY, strict=True)


def test_out_of_range_is_retried_and_retry_can_succeed(fake_ollama):
    fake_ollama.replies.extend(["Score: 150", "92"])
    judge = J.OllamaJudge(host=fake_ollama.url, timeout=5)
    assert judge.score(ENTRY) == 92
    assert len(fake_ollama.requests) == 2

    fake_ollama.replies.extend(["-5", "101"])
    assert judge.score(ENTRY) is None
    assert judge.last_replies == ["-5", "101"]


@pytest.mark.parametrize("stream", [False, True])
def test_slow_reply_raises_clear_error_quickly(fake_ollama, stream):
    fake_ollama.delay = 5.0
    judge = J.OllamaJudge(host=fake_ollama.url, timeout=0.3, stream=stream)
    start = time.monotonic()
    with pytest.raises(J.OllamaUnavailableError, match="no reply within 0.3 s") as info:
        judge.score(ENTRY)
    assert time.monotonic() - start < 1.5
    assert "ollama serve" in str(info.value) and "ollama pull llama3" in str(info.value)


def test_refused_connection_raises_clear_error(closed_port):
    judge = J.OllamaJudge(model="llama3", host=f"127.0.0.1:{closed_port}", timeout=2)
    assert judge.host == f"http://127.0.0.1:{closed_port}"
    with pytest.raises(J.OllamaUnavailableError, match="cannot connect") as info:
        judge.score(ENTRY)
    message = str(info.value)
    assert "ollama serve" in message and "ollama pull llama3" in message
    assert f"127.0.0.1:{closed_port}" in message


def test_missing_model_says_how_to_pull_it(fake_ollama):
    judge = J.OllamaJudge(model="llama3.1", host=fake_ollama.url, timeout=5)
    with pytest.raises(J.OllamaUnavailableError, match="404") as info:
        judge.score(ENTRY)
    assert "ollama pull llama3.1" in str(info.value)


@pytest.mark.parametrize("stream", [False, True])
def test_reply_that_is_not_ollama_json_raises_clear_error(fake_ollama, stream):
    fake_ollama.replies.append(GARBAGE)
    judge = J.OllamaJudge(host=fake_ollama.url, timeout=5, stream=stream)
    with pytest.raises(J.OllamaUnavailableError, match="unreadable reply"):
        judge.score(ENTRY)


def test_ollama_judge_rejects_bad_arguments():
    with pytest.raises(ValueError, match="model"):
        J.OllamaJudge(model="")
    with pytest.raises(ValueError, match="timeout"):
        J.OllamaJudge(timeout=0)
    judge = J.OllamaJudge(host="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="model_response"):
        judge.score({k: v for k, v in ENTRY.items() if k != "model_response"})


# --------------------------------------------------------------------------------------------
# Reading a score out of a reply
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, number",
    [
        ("85", 85),
        ("**85**", 85),
        ("Score: 80\nThe response lists 3 of the 4 items.", 80),
        ("Score (0-100): 85", 85),
        ("I would rate it 70/100.", 70),
        ("I would give it 65 out of 100.", 65),
        ("On a scale from 0 to 100, this deserves 72.", 72),
        ("85.5", None),  # a decimal is not the asked-for whole number
        ("Score: 8/10", None),  # another scale
        ("Score: 4/5", None),
        ("Score: 0.9", None),
        ("Score: 40\n(The reference answer would score 100.)", 40),  # the labelled one
        ("I'd give it a score of 85, as 2 of 3 steps are right.", 85),
        ("The score is 85%.", 85),
        ("Score: " + "9" * 400, None),  # probe: raised OverflowError
        ("9" * 5000, None),
        ("Score: 150", 150),
        ("-5", -5),
        ("It has 2 errors and 3 typos.", None),
        ("8/10", None),
        ("Very good.", None),
        ("Score: 50 - 60", None),  # a range is not a score
        ("Score: 50-60", None),
        ("Score: 50 to 60", None),
        ("Somewhere between 60 and 70.", None),
        ("Score: 85\nIt answers in 2-3 sentences.", 85),  # a range elsewhere leaves the score
        ("Score (0-100): 75 to 80", None),
    ],
)
def test_extract_number(reply, number):
    assert J._extract_number(reply) == number


def test_parse_score_keeps_only_the_scale():
    replies = ["0", "100", "101", "-1", "none"]
    assert [J.parse_score(r) for r in replies] == [0, 100, None, None, None]


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


def test_ollama_host_normalises_like_ollama(monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert J._ollama_host() == "http://localhost:11434"
    assert J._ollama_host("0.0.0.0") == "http://0.0.0.0:11434"
    assert J._ollama_host("example.com:5000/") == "http://example.com:5000"
    assert J._ollama_host("https://example.com") == "https://example.com:443"
    assert J._ollama_host("[::1]:8080") == "http://[::1]:8080"
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:1234")
    assert J._ollama_host() == "http://127.0.0.1:1234"
    with pytest.raises(ValueError, match="http"):
        J._ollama_host("ftp://example.com")


def test_probe_reaches_fake_server_via_ollama_host(fake_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{fake_ollama.port}")  # no scheme, as Ollama
    status = J.probe_ollama()
    assert status.server_reachable and status.version == FAKE_VERSION
    assert status.host == fake_ollama.url
    assert isinstance(status.process_found, bool)
    assert "answers (version 0.0.0-fake)" in str(status)
    assert J.probe_ollama().server_reachable is True


def test_probe_on_closed_port(closed_port, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{closed_port}")
    status = J.probe_ollama(timeout=0.5)
    assert not status.server_reachable and status.version is None
    assert "does not answer" in str(status)
    assert J.probe_ollama(timeout=0.5).server_reachable is False


class _Proc:
    def __init__(self, name):
        self.info = {"name": name}


def test_find_ollama_process(monkeypatch):
    import psutil

    monkeypatch.setattr(psutil, "process_iter", lambda attrs: iter([_Proc("bash"), _Proc(None)]))
    assert J._find_ollama_process() is False
    monkeypatch.setattr(psutil, "process_iter", lambda attrs: iter([_Proc(None), _Proc("Ollama")]))
    assert J._find_ollama_process() is True

    def denied(attrs):
        raise psutil.AccessDenied()

    monkeypatch.setattr(psutil, "process_iter", denied)
    assert J._find_ollama_process() is False


# --------------------------------------------------------------------------------------------
# Offline judges
# --------------------------------------------------------------------------------------------

REFERENCE = "The capital of France is Paris."
PARAPHRASE = "Paris is the capital city of France."
UNRELATED = "Photosynthesis turns sunlight, water and carbon dioxide into sugar."


def _entry(response: str, reference: str = REFERENCE) -> dict:
    return {
        "instruction": "Name the capital.",
        "input": "",
        "output": reference,
        "model_response": response,
    }


@pytest.fixture(scope="module")
def embedding_judge():
    return J.EmbeddingSimilarityJudge()


def test_embedding_judge(embedding_judge):
    assert "not an LLM" in embedding_judge.name
    same = embedding_judge.score(_entry(REFERENCE))
    close = embedding_judge.score(_entry(PARAPHRASE))
    far = embedding_judge.score(_entry(UNRELATED))
    assert same >= 95
    assert far <= 30
    assert same >= close > far
    assert embedding_judge.score(_entry(PARAPHRASE)) == close  # deterministic
    assert embedding_judge.score(_entry("")) == embedding_judge.score(_entry("  \n")) == 0
    with pytest.raises(ValueError, match="output"):
        embedding_judge.score({"instruction": "x", "input": "", "model_response": "y"})


def test_embedding_judge_rescales_against_unrelated_pairs(embedding_judge):
    texts = [REFERENCE, PARAPHRASE, UNRELATED, "Water boils at 100 degrees Celsius.",
             "The meeting is moved to Friday afternoon.", "Add two cups of flour to the bowl."]  # fmt: skip
    raw = embedding_judge.similarity(REFERENCE, UNRELATED)
    try:
        baseline = embedding_judge.calibrate(texts)
        assert 0.0 < baseline < 0.5  # unrelated English sentences are not orthogonal
        pairs = J._unrelated_pairs(texts)
        assert len(pairs) == len(texts) and all(a != b for a, b in pairs)
        assert embedding_judge.score(_entry(UNRELATED)) == J._similarity_to_score(raw, baseline)
        assert embedding_judge.score(_entry(REFERENCE)) >= 95  # identical texts stay at the top
    finally:
        embedding_judge.baseline = 0.0
    with pytest.raises(ValueError, match="two different"):
        embedding_judge.calibrate(["same", "same"])


def test_rouge_l_judge():
    judge = J.RougeLJudge()
    assert "not an LLM" in judge.name and "ROUGE-L" in judge.name
    assert judge.score(_entry(REFERENCE)) == 100
    assert judge.score(_entry(UNRELATED)) == 0
    # LCS of [the cat sat on the mat] and [the cat is on the mat] is 5 words: F1 = 5/6
    assert judge.score(_entry("The cat sat on the mat.", "the cat is on the mat")) == 83
    assert judge.f1("cats sitting", "cat sits") == 1.0  # Porter stemming
    assert judge.score(_entry("")) == 0
    with pytest.raises(TypeError, match="mapping"):
        judge.score(["not", "a", "dict"])
    with pytest.raises(TypeError, match="model_response"):
        judge.score({**ENTRY, "model_response": None})


def test_similarity_to_score():
    assert J._similarity_to_score(-0.4) == 0
    assert J._similarity_to_score(0.125) == 13  # halves round up
    assert J._similarity_to_score(0.5) == 50
    assert J._similarity_to_score(1.0000002) == 100
    assert J._similarity_to_score(0.2, baseline=0.2) == 0
    assert J._similarity_to_score(0.6, baseline=0.2) == 50
    assert J._similarity_to_score(1.0, baseline=0.2) == 100
    with pytest.raises(ValueError, match="baseline"):
        J._similarity_to_score(0.5, baseline=1.0)


def test_offline_judges_are_calibrated_on_the_texts_given():
    texts = [REFERENCE, UNRELATED, "Water boils at 100 degrees Celsius.", "Add two cups of flour."]
    judges = J.offline_judges(texts)
    assert [type(j) for j in judges] == [J.EmbeddingSimilarityJudge, J.RougeLJudge]
    assert 0.0 < judges[0].baseline < 0.5
    assert all(j.score(_entry("")) == 0 and j.score(_entry(REFERENCE)) >= 95 for j in judges)


# --------------------------------------------------------------------------------------------
# score_responses
# --------------------------------------------------------------------------------------------


class _ListJudge:
    name = "scripted"

    def __init__(self, scores):
        self.scores = iter(scores)

    def score(self, entry):
        return next(self.scores)


def test_score_responses_summary_and_file(tmp_path):
    records = [ENTRY] * 4
    responses = tmp_path / "instruction-data-with-response.json"
    scores, summary = J.score_responses(
        records, _ListJudge([90, None, 40, 71]), path=responses, progress=False
    )
    assert scores == [90, None, 40, 71]
    assert summary == {
        "judge": "scripted",
        "n": 4,
        "valid": 3,
        "invalid": 1,
        "mean": 67.0,
        "median": 71.0,
        "min": 40,
        "max": 90,
    }
    saved = tmp_path / "instruction-data-with-response-scores.json"
    assert J.scores_path(responses) == saved
    written = json.loads(saved.read_text())
    assert written["summary"] == summary and written["scores"] == scores and written["complete"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [saved.name]  # no temporary file left


def test_score_responses_all_invalid_and_bad_record():
    scores, summary = J.score_responses([ENTRY], _ListJudge([None]), progress=False)
    assert scores == [None] and summary["invalid"] == 1 and summary["mean"] is None
    with pytest.raises(ValueError, match="record 1.*model_response"):
        J.score_responses(
            [ENTRY, {"instruction": "x", "input": "", "output": "y"}],
            J.RougeLJudge(),
            progress=False,
        )


def test_score_responses_with_ollama_judge(fake_ollama, tmp_path):
    fake_ollama.replies.extend(["90", "no idea", "still no idea", "Score: 40"])
    judge = J.OllamaJudge(host=fake_ollama.url, timeout=5)
    scores, summary = J.score_responses([ENTRY] * 3, judge, path=tmp_path / "r.json")
    assert scores == [90, None, 40]
    assert (summary["n"], summary["invalid"], summary["mean"]) == (3, 1, 65.0)
    assert summary["judge"] == judge.name and "llama3" in judge.name
    assert len(fake_ollama.requests) == 4


# --------------------------------------------------------------------------------------------
# Probes of the hardening pass: nothing scored is lost, odd replies never crash a run
# --------------------------------------------------------------------------------------------


def test_parse_score_never_raises_on_huge_numbers():
    """Probe: a 400-digit number raised OverflowError, which ended the whole scoring run."""
    for reply in ("Score: " + "9" * 400, "9" * 400 + ".5", "1e999", "Score: 1" + "0" * 5000):
        assert J.parse_score(reply) is None


def test_reply_that_is_a_json_list_raises_clear_error(fake_ollama):
    """Probe: an Ollama reply whose JSON is a list gave a raw TypeError."""
    fake_ollama.replies.append(LIST_JSON)
    judge = J.OllamaJudge(host=fake_ollama.url, timeout=5)
    with pytest.raises(J.OllamaUnavailableError, match="unreadable reply"):
        judge.score(ENTRY)


class _FailingJudge:
    """Scores from a list, and raises at the record whose index is ``fail_at`` (0-based)."""

    def __init__(self, name, scores, fail_at=None):
        self.name, self.scores, self.fail_at, self.calls = name, list(scores), fail_at, 0

    def score(self, entry):
        if self.calls == self.fail_at:
            raise J.OllamaUnavailableError("the server went away")
        self.calls += 1
        return self.scores.pop(0)


def _records(n):
    return [{**ENTRY, "model_response": f"answer {i}"} for i in range(n)]


def test_failure_at_record_k_keeps_the_finished_scores(tmp_path):
    """Probe: score_responses wrote only at the end; a failure at record k lost every score."""
    responses, records = tmp_path / "r.json", _records(5)
    with pytest.raises(J.OllamaUnavailableError):
        J.score_responses(records, _FailingJudge("j", [10, None, 30], fail_at=3), responses, False)
    saved = json.loads(J.scores_path(responses).read_text())
    assert saved["scores"] == [10, None, 30] and saved["complete"] is False


def test_rerun_with_the_same_judge_scores_only_the_missing_records(tmp_path):
    responses, records = tmp_path / "r.json", _records(5)
    with pytest.raises(J.OllamaUnavailableError):
        J.score_responses(records, _FailingJudge("j", [10, None, 30], fail_at=3), responses, False)
    rest = _FailingJudge("j", [40, 50])
    scores, summary = J.score_responses(records, rest, responses, progress=False)
    assert scores == [10, None, 30, 40, 50] and rest.calls == 2
    assert summary["n"] == 5 and json.loads(J.scores_path(responses).read_text())["complete"]


def test_another_judge_or_other_records_start_afresh(tmp_path):
    responses, records = tmp_path / "r.json", _records(3)
    J.score_responses(records, _FailingJudge("j", [1, 2, 3]), responses, progress=False)
    other = _FailingJudge("k", [7, 8, 9])
    assert J.score_responses(records, other, responses, progress=False)[0] == [7, 8, 9]
    changed = [*records[:2], {**records[2], "model_response": "new"}]
    again = _FailingJudge("k", [4, 5, 6])
    assert J.score_responses(changed, again, responses, progress=False)[0] == [4, 5, 6]
