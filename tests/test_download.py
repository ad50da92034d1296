"""Tests for gpt2lib.download against a real HTTP server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gpt2lib import download as dl
from gpt2lib.download import DownloadError, cache_path, download, fetch, mirror_url

DATA = bytes(range(256)) * 80  # 20480 bytes, no two halves alike
SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class FaultServer:
    """Serves ``files``; each request to a path takes the next action from its plan.

    Actions: ``ok`` (honours Range), ``ignore_range`` (always 200, whole file), ``drop`` (sends
    half of the body, then closes cleanly), ``reset`` (sends a little, then a TCP reset),
    ``500``, ``wrong`` (right length, wrong bytes), ``slow`` (waits 0.3 s, then ``ok``),
    ``stall_headers`` and ``stall_body`` (go silent before the response or halfway through it),
    ``no_length`` (no Content-Length), ``no_length_drop`` (no Content-Length, half the body,
    then a clean close), ``odd_length`` (a Content-Length of "²").
    """

    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    plans: dict[str, list[str]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    log: list[tuple[str, str | None]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str, data: bytes = DATA, *plan: str, default: str = "ok") -> str:
        """Serve ``data`` at ``path`` with the given fault plan; return its URL."""
        self.files[path], self.plans[path], self.defaults[path] = data, list(plan), default
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self, path: str) -> list[str | None]:
        """The Range header of each request to ``path`` (None: no Range)."""
        return [rng for p, rng in self.log if p == path]

    def next_action(self, path: str) -> str:
        with self.lock:
            plan = self.plans.get(path, [])
            return plan.pop(0) if plan else self.defaults.get(path, "ok")


def _make_handler(server: FaultServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            server.log.append((self.path, rng))
            data = server.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            action = server.next_action(self.path)
            if action == "500":
                self.send_error(500)
                return
            if action == "stall_headers":
                server.release.wait(5)
                return
            if action == "slow":
                time.sleep(0.3)
            start = 0
            if rng and action != "ignore_range":
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            body = data[start:]
            if action == "wrong":
                body = bytes(b ^ 0xFF for b in body)
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            if action == "odd_length":
                self.send_header("Content-Length", "\u00b2")  # "²".isdigit() is True
            elif action not in ("no_length", "no_length_drop"):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if action in ("drop", "no_length_drop"):
                self.wfile.write(body[: len(body) // 2])
            elif action == "stall_body":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                server.release.wait(5)
            elif action == "reset":
                self.wfile.write(body[:1000])
                self.wfile.flush()
                linger = struct.pack("ii", 1, 0)  # close with RST, not FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()
            else:
                self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A threaded HTTP server on 127.0.0.1 with fault injection, shut down after the test."""
    state = FaultServer()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    httpd.handle_error = lambda request, client_address: None  # clients hang up on purpose
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield state
    state.release.set()  # let stalled handlers finish
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A private cache, no mirror, and retry settings small enough for tests."""
    monkeypatch.setenv("GPT2LIB_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("GPT2LIB_MIRROR", raising=False)
    monkeypatch.setattr(dl, "TIMEOUT", 2.0)
    monkeypatch.setattr(dl, "RETRIES", 3)
    monkeypatch.setattr(dl, "BACKOFF", 0.01)


def _leftovers(dest: Path) -> list[str]:
    """The files beside ``dest``, less the download records (``.<name>.download.json``)."""
    if not dest.parent.exists():
        return []
    return sorted(p.name for p in dest.parent.iterdir() if not p.name.endswith(".download.json"))


# --- the happy path and the URL mapping --------------------------------------------------------


def test_download_plain(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/f.bin")
    dest = download(url, tmp_path / "out" / "f.bin", sha256=SHA, size=len(DATA))
    assert dest == tmp_path / "out" / "f.bin"
    assert dest.read_bytes() == DATA
    assert _leftovers(dest) == ["f.bin"]
    assert server.requests("/f.bin") == [None]


def test_mirror_url_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/hparams.json?x=1"
    assert mirror_url(url) == url
    monkeypatch.setenv("GPT2LIB_MIRROR", "http://127.0.0.1:8000/m/")
    expected = "http://127.0.0.1:8000/m/openaipublic.blob.core.windows.net/gpt-2/models/124M"
    assert mirror_url(url) == expected + "/hparams.json"
    monkeypatch.setenv("GPT2LIB_MIRROR", "file:///srv/mirror")
    assert mirror_url("https://h.org/a/b+c.zip") == "file:///srv/mirror/h.org/a/b+c.zip"
    assert mirror_url("file:///local/x") == "file:///local/x"  # not an http(s) URL: unchanged
    monkeypatch.setenv("GPT2LIB_MIRROR", "/srv/mirror")
    with pytest.raises(ValueError, match="GPT2LIB_MIRROR"):
        mirror_url(url)
    with pytest.raises(TypeError, match="url"):
        mirror_url(b"https://h.org/x")  # type: ignore[arg-type]


def test_fetch_through_http_mirror(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.add("/example.org/data/f.bin")
    monkeypatch.setenv("GPT2LIB_MIRROR", server.url(""))
    path = fetch("https://example.org/data/f.bin", sha256=SHA)
    assert path == cache_path("https://example.org/data/f.bin")
    assert path.relative_to(dl.cache_dir()) == Path("downloads/example.org/data/f.bin")
    assert path.read_bytes() == DATA
    assert server.requests("/example.org/data/f.bin") == [None]


def test_fetch_through_file_mirror(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    src = tmp_path / "mirror" / "example.org" / "a b" / "sms+spam.zip"
    src.parent.mkdir(parents=True)
    src.write_bytes(DATA)
    monkeypatch.setenv("GPT2LIB_MIRROR", (tmp_path / "mirror").as_uri())
    path = fetch("https://example.org/a%20b/sms+spam.zip", sha256=SHA, size=len(DATA))
    assert path.read_bytes() == DATA
    assert path.parent.name == "a%20b"  # cache keeps the URL's path as written
    with pytest.raises(DownloadError, match=r"https://example.org/missing.zip.*not found"):
        fetch("https://example.org/missing.zip")
    src.write_bytes(DATA[:-1])  # the mirror file is short: a size mismatch, nothing kept
    dest = tmp_path / "out" / "x.zip"
    with pytest.raises(DownloadError, match="size mismatch"):
        download("https://example.org/a%20b/sms+spam.zip", dest, size=len(DATA))
    assert _leftovers(dest) == []


def test_fetch_caches_and_refetches_corrupted(server: FaultServer) -> None:
    url = server.add("/c.bin")
    path = fetch(url, sha256=SHA)
    assert fetch(url, sha256=SHA) == path
    assert server.requests("/c.bin") == [None]  # the second fetch used the cache
    path.write_bytes(b"x" + DATA[1:])  # corrupt it in place (same size)
    assert fetch(url, sha256=SHA).read_bytes() == DATA
    path.write_bytes(DATA[:100])  # truncate it: the size alone catches this
    assert fetch(url, size=len(DATA)).read_bytes() == DATA
    assert server.requests("/c.bin") == [None, None, None]


def test_concurrent_fetches_download_once(server: FaultServer) -> None:
    url = server.add("/once.bin", DATA, "slow")  # the first transfer takes 0.3 s
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(fetch(url, sha256=SHA))) for _ in range(2)
    ]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(10)
    assert len(results) == 2 and results[0] == results[1]
    assert results[0].read_bytes() == DATA
    assert server.requests("/once.bin") == [None]  # the second waited, then found the cache


# --- injected faults --------------------------------------------------------------------------


def test_dropped_connection_resumes_with_range(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/drop.bin", DATA, "drop")
    dest = download(url, tmp_path / "drop.bin", sha256=SHA, size=len(DATA))
    assert dest.read_bytes() == DATA
    assert server.requests("/drop.bin") == [None, f"bytes={len(DATA) // 2}-"]


def test_connection_reset_is_retried(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/reset.bin", DATA, "reset", "reset")
    assert download(url, tmp_path / "r.bin", sha256=SHA).read_bytes() == DATA
    assert len(server.requests("/reset.bin")) == 3


def test_500_then_success(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/flaky.bin", DATA, "500", "500")
    assert download(url, tmp_path / "flaky.bin", sha256=SHA).read_bytes() == DATA
    assert server.requests("/flaky.bin") == [None, None, None]


def test_retries_exhausted(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/down.bin", DATA, default="500")
    dest = tmp_path / "down.bin"
    with pytest.raises(DownloadError, match=r"/down.bin: giving up after 3 attempts.*HTTP 500"):
        download(url, dest, retries=2)
    assert len(server.requests("/down.bin")) == 3
    assert not dest.exists()


def test_exhausted_transfer_keeps_part_and_next_call_resumes(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/half.bin", DATA, "drop")
    dest = tmp_path / "half.bin"
    with pytest.raises(DownloadError, match=r"giving up after 1 attempt;.*10240 of 20480"):
        download(url, dest, sha256=SHA, retries=0)
    assert not dest.exists()
    assert (tmp_path / "half.bin.part").read_bytes() == DATA[: len(DATA) // 2]
    assert download(url, dest, sha256=SHA).read_bytes() == DATA
    assert server.requests("/half.bin") == [None, "bytes=10240-"]
    assert _leftovers(dest) == ["half.bin"]


def test_wrong_bytes_hash_mismatch_nothing_kept(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/bad.bin", DATA, default="wrong")
    dest = tmp_path / "bad.bin"
    with pytest.raises(DownloadError, match=r"/bad.bin: sha256 mismatch.*not kept"):
        download(url, dest, sha256=SHA)
    assert _leftovers(dest) == []
    assert server.requests("/bad.bin") == [None]  # a fresh download that fails is not repeated


def test_size_mismatch_reported_by_server(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/big.bin")
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match=r"size mismatch: expected 100 bytes.*20480"):
        download(url, dest, size=100)
    assert _leftovers(dest) == []


def test_404_is_final(server: FaultServer, tmp_path: Path) -> None:
    dest = tmp_path / "nothing.bin"
    with pytest.raises(DownloadError, match=r"/nothing.bin: HTTP 404"):
        download(server.url("/nothing.bin"), dest)
    assert server.requests("/nothing.bin") == [None]  # no retries
    assert _leftovers(dest) == []


def test_server_ignoring_range_restarts_from_zero(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/norange.bin", DATA, "drop", default="ignore_range")
    dest = download(url, tmp_path / "norange.bin", sha256=SHA)
    assert dest.read_bytes() == DATA  # the 200 body replaced the half, not appended to it
    assert server.requests("/norange.bin") == [None, "bytes=10240-"]


def test_stale_part_with_wrong_bytes_is_replaced(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/stale.bin")
    (tmp_path / "stale.bin.part").write_bytes(b"\0" * 5000)  # left over, and not our bytes
    assert download(url, tmp_path / "stale.bin", sha256=SHA).read_bytes() == DATA
    assert server.requests("/stale.bin") == ["bytes=5000-", None]


def test_complete_part_without_size_is_confirmed_by_416(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/done.bin")
    (tmp_path / "done.bin.part").write_bytes(DATA)
    assert download(url, tmp_path / "done.bin", sha256=SHA).read_bytes() == DATA
    assert server.requests("/done.bin") == [f"bytes={len(DATA)}-"]  # 416 */20480: nothing more


def test_complete_part_with_known_size_needs_no_request(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/known.bin")
    (tmp_path / "known.bin.part").write_bytes(DATA)
    assert download(url, tmp_path / "known.bin", SHA, len(DATA)).read_bytes() == DATA
    assert server.requests("/known.bin") == []


def test_slow_server_times_out_with_clear_error(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/slow.bin", DATA, default="stall_headers")
    dest = tmp_path / "slow.bin"
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"giving up after 2 attempts.*within 0.3 s"):
        download(url, dest, timeout=0.3, retries=1)
    assert time.monotonic() - t0 < 3.0
    assert _leftovers(dest) == []


def test_stall_mid_body_times_out_then_resumes(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/stall.bin", DATA, "stall_body")
    dest = download(url, tmp_path / "stall.bin", sha256=SHA, timeout=0.3)
    assert dest.read_bytes() == DATA
    assert server.requests("/stall.bin") == [None, "bytes=10240-"]


def test_connection_refused_is_final(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="connection refused"):
        download(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_removes_partial_file(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/full.bin")
    dest = tmp_path / "full.bin"
    (tmp_path / "full.bin.part").symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(DownloadError, match=r"/full.bin: disk full.*partial file was removed"):
        download(url, dest, sha256=SHA)
    assert _leftovers(dest) == []


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256 must be 64 hex digits"):
        download("https://h.org/x", tmp_path / "x", sha256="abc")
    with pytest.raises(ValueError, match="size must be a non-negative int"):
        fetch("https://h.org/x", size=-1)
    with pytest.raises(ValueError, match=r"ftp://h\.org/x"):
        download("ftp://h.org/x", tmp_path / "x")
    with pytest.raises(ValueError, match=r"'\.\.'"):
        cache_path("https://h.org/a/../../etc/passwd")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url, message",
    [
        ("https://../x", "host '..' is not a host name"),
        ("https://./x", "host '.' is not a host name"),
        ("https://h.org/a/%2e%2e/%2E%2E/x", "segment '%2e%2e' would leave the cache folder"),
        ("https://h.org/%2e/x", "segment '%2e' would leave"),
        ("https://h.org/a%2f..%2fb/x", "segment 'a%2f..%2fb' would leave"),
    ],
)
def test_cache_path_stays_inside_downloads(url: str, message: str) -> None:
    """Probe: a host of '..' and %2e%2e segments landed outside the cache's downloads/."""
    with pytest.raises(ValueError, match=re.escape(message)):
        cache_path(url)
    inside = cache_path("https://h.org/a/b%20c.txt")
    assert inside.parent == cache_path("https://h.org/a/x").parent


# --- probes of the hardening pass -------------------------------------------------------------


def test_truncated_cached_file_is_fetched_again(server: FaultServer) -> None:
    """Probe: fetch without sha256/size kept any file already in the cache, however damaged."""
    url = server.add("/cached.bin")
    path = fetch(url)
    path.write_bytes(DATA[:1000])  # truncated on disk, say by a crash of another tool
    assert fetch(url).read_bytes() == DATA
    assert server.requests("/cached.bin") == [None, None]
    path.unlink()
    path.with_name(f".{path.name}.download.json").unlink()
    path.write_bytes(DATA)  # a file nobody recorded is not trusted either
    fetch(url)
    assert len(server.requests("/cached.bin")) == 3


def test_body_without_length_is_refused_unless_it_can_be_checked(
    server: FaultServer, tmp_path: Path
) -> None:
    """A body without Content-Length that closed early must not be installed as complete."""
    url = server.add("/nolen.bin", DATA, default="no_length")
    dest = tmp_path / "nolen.bin"
    with pytest.raises(DownloadError, match="cannot be checked for completeness; pass size="):
        download(url, dest)
    assert _leftovers(dest) == []
    assert download(url, dest, sha256=SHA).read_bytes() == DATA  # the hash checks it
    assert server.requests("/nolen.bin") == [None, None]


def test_without_a_hash_a_changed_file_is_fetched_whole_not_spliced(
    server: FaultServer, tmp_path: Path
) -> None:
    """Without a sha256 nothing could catch a splice of two versions, so nothing is resumed."""
    url = server.add("/moving.bin", DATA, "drop")
    dest = tmp_path / "moving.bin"
    with pytest.raises(DownloadError, match="giving up after 1 attempt"):
        download(url, dest, retries=0)
    new = DATA[::-1]
    server.files["/moving.bin"] = new
    assert download(url, dest).read_bytes() == new  # not DATA's head + new's tail
    assert server.requests("/moving.bin") == [None, None]


def test_a_resumed_file_that_fails_its_hash_is_fetched_again_from_zero(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/changed.bin", DATA, "drop")
    dest = tmp_path / "changed.bin"
    new = DATA[::-1]
    with pytest.raises(DownloadError, match="giving up after 1 attempt"):
        download(url, dest, sha256=hashlib.sha256(new).hexdigest(), retries=0)
    server.files["/changed.bin"] = new  # the server's file changed between the two calls
    assert download(url, dest, sha256=hashlib.sha256(new).hexdigest()).read_bytes() == new
    assert server.requests("/changed.bin") == [None, "bytes=10240-", None]


def test_non_numeric_content_length_is_not_a_crash(server: FaultServer, tmp_path: Path) -> None:
    """Probe: a Content-Length of "²" gave a bare ValueError."""
    url = server.add("/odd.bin", DATA, default="odd_length")
    assert download(url, tmp_path / "odd.bin", sha256=SHA).read_bytes() == DATA


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_loopback_mirror_bypasses_the_proxy(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probe: downloads from a local mirror went through http_proxy when it was set."""
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    url = server.add("/direct.bin")
    assert download(url, tmp_path / "direct.bin").read_bytes() == DATA


def test_refusing_proxy_is_named_not_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _closed_port()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(DownloadError, match=rf"refused by the proxy http://127.0.0.1:{port}"):
        download("http://assets.example/x.bin", tmp_path / "x.bin")
