"""Tests for tools.mirror: building a mirror with a stand-in checkpoint and serving it over HTTP."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from gpt2lib.config import GPTConfig
from gpt2lib.files import FileFormatError
from gpt2lib.weights import (
    GPT2_FILES,
    download_gpt2,
    load_pretrained,
    model_from_openai_checkpoint,
)
from tools import mirror
from tools.mirror import MODELS_PATH, build_mirror, random_gpt2, register_model, serve
from tools.offline import shared_assets

REPO = Path(__file__).resolve().parents[1]
SOURCE = shared_assets() / "mirror"
ENCODER = "openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A mirror built from the shared assets plus ``stand-in-tiny``, served on 127.0.0.1."""
    if not SOURCE.is_dir():
        pytest.skip(f"offline mirror not found at {SOURCE}")
    pytest.importorskip("tensorflow")
    out = build_mirror(tmp_path_factory.mktemp("mirror") / "m", SOURCE, ["stand-in-tiny"])
    server, url = serve(out)
    yield out, url
    server.shutdown()
    server.server_close()


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_build_layout_and_manifest(served):
    out, _ = served
    encoder = out / ENCODER
    assert encoder.is_file() and not encoder.is_symlink()  # a hard link or a copy
    assert encoder.read_bytes() == (SOURCE / ENCODER).read_bytes()
    ckpt = out / MODELS_PATH / "stand-in-tiny"
    assert sorted(p.name for p in ckpt.iterdir()) == sorted([*GPT2_FILES, "gpt2lib.json"])
    about = json.loads((ckpt / "gpt2lib.json").read_text())  # the description travels along
    assert "not GPT-2" in about["description"]
    assert (ckpt / "encoder.json").read_bytes() == encoder.read_bytes()
    entry = json.loads((out / "stand-ins.json").read_text())["stand-in-tiny"]
    assert "not GPT-2" in entry["description"]
    assert entry["parameters"] == 3_324_736  # GPT-2's vocabulary dominates: 50257 x 64 in wte
    assert entry["hparams"] == {
        "n_vocab": 50257,
        "n_ctx": 128,
        "n_embd": 64,
        "n_head": 2,
        "n_layer": 2,
    }
    assert sorted(entry["files"]) == sorted([*GPT2_FILES, "gpt2lib.json"])


def test_download_gpt2_from_the_served_mirror(served, tmp_path, monkeypatch):
    out, url = served
    monkeypatch.setenv("GPT2LIB_MIRROR", url)
    monkeypatch.setenv("GPT2LIB_HOME", str(tmp_path / "home"))
    ckpt = download_gpt2("stand-in-tiny")
    assert ckpt == tmp_path / "home" / "models" / "stand-in-tiny"
    served_dir = out / MODELS_PATH / "stand-in-tiny"
    for name in GPT2_FILES:
        assert (ckpt / name).read_bytes() == (served_dir / name).read_bytes()

    model = model_from_openai_checkpoint(ckpt)
    original = mirror.MODELS["stand-in-tiny"].build()
    assert model.cfg == original.cfg
    idx = torch.randint(0, 50257, (2, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), original(idx), rtol=0, atol=0)

    # complete files are not fetched again
    stamps = {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()}
    assert download_gpt2("stand-in-tiny", tmp_path / "home" / "models") == ckpt
    assert {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()} == stamps

    # a name the mirror does not serve fails and leaves nothing that looks complete
    with pytest.raises(Exception, match="404|Not Found|not found"):
        download_gpt2("stand-in-missing", tmp_path / "models")
    assert not any((tmp_path / "models" / "stand-in-missing" / f).exists() for f in GPT2_FILES)


def test_range_requests(served):
    out, url = served
    data = (out / ENCODER).read_bytes()
    file_url = f"{url}/{ENCODER}"

    status, headers, body = get(file_url)
    assert (status, body, headers["Accept-Ranges"]) == (200, data, "bytes")
    status, headers, body = get(file_url, Range="bytes=10-19")
    assert (status, body) == (206, data[10:20])
    assert headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert headers["Content-Length"] == "10"
    status, _, body = get(file_url, Range=f"bytes={len(data) - 100}-")
    assert (status, body) == (206, data[-100:])
    status, headers, body = get(file_url, Range="bytes=-5")
    assert (status, body, headers["Content-Range"]) == (
        206,
        data[-5:],
        f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}",
    )
    status, _, body = get(file_url, Range=f"bytes=5-{len(data) + 1000}")  # end clipped
    assert (status, body) == (206, data[5:])
    status, headers, _ = get(file_url, Range=f"bytes={len(data)}-")
    assert (status, headers["Content-Range"]) == (416, f"bytes */{len(data)}")
    # several ranges, or nonsense, are answered with the whole file (allowed by RFC 9110)
    assert get(file_url, Range="bytes=0-1,5-6")[::2] == (200, data)
    assert get(file_url, Range="bytes=9-3")[::2] == (200, data)
    assert get(f"{url}/no/such/file")[0] == 404
    request = urllib.request.Request(file_url, method="HEAD", headers={"Range": "bytes=0-99"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert (r.status, r.headers["Content-Length"], r.read()) == (206, "100", b"")


def test_serves_loopback_only(tmp_path):
    server, url = serve(tmp_path)
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert url == f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(FileNotFoundError):
        serve(tmp_path / "missing")


def test_rebuild_only_what_changed(served, monkeypatch):
    out, _ = served
    data = out / MODELS_PATH / "stand-in-tiny" / "model.ckpt.data-00000-of-00001"
    stamp = data.stat().st_mtime_ns
    build_mirror(out, SOURCE, ["stand-in-tiny"])
    assert data.stat().st_mtime_ns == stamp  # same weights: not rewritten

    monkeypatch.setattr(mirror, "MODELS", dict(mirror.MODELS))
    cfg = GPTConfig(context_length=8, emb_dim=8, n_heads=2, n_layers=1, tie_embeddings=True)
    register_model("test-8", lambda: random_gpt2(cfg, 7), "an 8-dim test model")
    build_mirror(out, None, ["test-8"])
    manifest = json.loads((out / "stand-ins.json").read_text())
    assert {"stand-in-tiny", "test-8"} <= set(manifest)
    first = (out / MODELS_PATH / "test-8" / "model.ckpt.data-00000-of-00001").read_bytes()
    register_model("test-8", lambda: random_gpt2(cfg, seed=8), "the same, another seed")
    build_mirror(out, None, ["test-8"])
    assert (out / MODELS_PATH / "test-8" / "model.ckpt.data-00000-of-00001").read_bytes() != first
    assert json.loads((out / "stand-ins.json").read_text())["test-8"]["description"] == (
        "the same, another seed"
    )


def test_register_and_build_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(mirror, "MODELS", dict(mirror.MODELS))
    for name in ("", "a/b", "../x", ".x"):
        with pytest.raises(ValueError, match="invalid model name"):
            register_model(name, lambda: None, "x")
    with pytest.raises(ValueError, match="OpenAI's sizes"):
        register_model("124M", lambda: None, "x")
    with pytest.raises(ValueError, match="unknown model"):
        build_mirror(tmp_path, None, ["gpt2-real"])
    with pytest.raises(FileNotFoundError, match="source mirror"):
        build_mirror(tmp_path, tmp_path / "missing", [])


def test_command_line(tmp_path, capsys):
    source = tmp_path / "src" / "example.org" / "file.txt"
    source.parent.mkdir(parents=True)
    source.write_text("hello mirror\n")
    mirror.main(["build", str(tmp_path / "out"), "--source", str(tmp_path / "src"), "--models", ""])
    assert "built" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        mirror.main(["build", str(tmp_path / "out"), "--models", "nope"])
    assert exit_info.value.code == 2 and "unknown model" in capsys.readouterr().err

    serve_cmd = [sys.executable, "-m", "tools.mirror", "serve", tmp_path / "out", "--port", "0"]
    with subprocess.Popen(serve_cmd, cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        try:
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert get(f"{url}/example.org/file.txt")[::2] == (200, b"hello mirror\n")
        finally:
            proc.terminate()


# --- probes of the hardening pass: damaged checkpoints ------------------------------------------


@pytest.fixture
def from_served(served, tmp_path, monkeypatch):
    out, url = served
    monkeypatch.setenv("GPT2LIB_MIRROR", url)
    monkeypatch.setenv("GPT2LIB_HOME", str(tmp_path / "home"))
    return out / MODELS_PATH / "stand-in-tiny"


DATA_FILE = "model.ckpt.data-00000-of-00001"


def test_truncated_cached_checkpoint_file_is_fetched_again(from_served):
    """Probe: a truncated model.ckpt.data-* in the cache was kept forever."""
    ckpt = download_gpt2("stand-in-tiny")
    data = ckpt / DATA_FILE
    data.write_bytes(data.read_bytes()[:1000])
    download_gpt2("stand-in-tiny")
    assert data.read_bytes() == (from_served / DATA_FILE).read_bytes()


def test_checkpoint_that_fails_to_read_is_fetched_again_once(from_served):
    """Same size, bytes flipped: the read fails, the files are fetched again, the load works."""
    ckpt = download_gpt2("stand-in-tiny")
    data = ckpt / DATA_FILE
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    data.write_bytes(bytes(damaged))
    with pytest.raises(FileFormatError, match=r"cannot read tensor .*(checksum|crc|Checksum)"):
        model_from_openai_checkpoint(ckpt)
    model, info = load_pretrained("stand-in-tiny")
    assert data.read_bytes() == (from_served / DATA_FILE).read_bytes()
    assert info.n_params == 3_324_736


def test_truncated_data_file_error_names_the_file(from_served, tmp_path):
    """Probe: `IndexError: Read less bytes than requested`, naming no file."""
    local = tmp_path / "local"
    shutil.copytree(download_gpt2("stand-in-tiny"), local)
    (local / DATA_FILE).write_bytes((local / DATA_FILE).read_bytes()[:5000])
    with pytest.raises(
        FileFormatError, match=rf"{DATA_FILE}: truncated: 5,000 bytes, but its index"
    ):
        model_from_openai_checkpoint(local)


def test_broken_hparams_error_names_the_file(from_served, tmp_path):
    """Probe: a broken hparams.json gave a bare JSONDecodeError."""
    local = tmp_path / "local"
    shutil.copytree(download_gpt2("stand-in-tiny"), local)
    (local / "hparams.json").write_text('{"n_vocab": 50257,')
    with pytest.raises(
        FileFormatError, match=r"hparams\.json: the hparams\.json is not valid JSON"
    ):
        model_from_openai_checkpoint(local)
    (local / "hparams.json").write_text('{"n_vocab": "many"}')
    with pytest.raises(FileFormatError, match=r"must be positive integers"):
        model_from_openai_checkpoint(local)


# --- probes of the hardening pass: the mirror server ------------------------------------------


def raw_request(url: str, path: str, headers: dict[str, str] | None = None) -> int:
    """Send a request with a raw path (no client-side quoting); return the status code."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_serves_only_regular_files_inside_the_root(tmp_path):
    """Probe: symlinks out of the root were served; directories were listed, .build.lock too."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "file.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside")
    (root / "a" / "link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "dirlink").symlink_to(tmp_path)
    (root / ".build.lock").write_text("")
    server, url = serve(root)
    try:
        assert get(f"{url}/a/file.txt")[::2] == (200, b"inside")
        for path in ("/a/link.txt", "/dirlink/secret.txt", "/a/", "/", "/.build.lock",
                     "/a/../../secret.txt", "/%2e%2e/secret.txt"):  # fmt: skip
            assert raw_request(url, path) == 404, path
    finally:
        server.shutdown()
        server.server_close()


def test_malformed_requests_get_an_answer(served):
    """Probe: a 4,300-digit Range number and %00 in the path crashed the handler (no reply)."""
    _, url = served
    assert raw_request(url, f"/{ENCODER}", {"Range": "bytes=" + "9" * 4300 + "-"}) == 416
    assert raw_request(url, f"/{ENCODER}", {"Range": "bytes=0-" + "9" * 4400}) == 416
    assert raw_request(url, "/openaipublic.blob.core.windows.net/%00x") == 400


def test_if_range_sends_all_of_a_changed_file(served):
    out, url = served
    data = (out / ENCODER).read_bytes()
    status, headers, _ = get(f"{url}/{ENCODER}")
    etag = headers["ETag"]
    assert get(f"{url}/{ENCODER}", Range="bytes=10-", **{"If-Range": etag})[::2] == (206, data[10:])
    assert get(f"{url}/{ENCODER}", Range="bytes=10-", **{"If-Range": '"old"'})[::2] == (200, data)


def test_idle_connections_are_closed(tmp_path):
    """Probe: idle connections were never timed out (one thread each)."""
    server, url = serve(tmp_path, timeout=0.3)
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as sock:
            start = time.monotonic()
            assert sock.recv(10) == b""  # the server hung up on a client that said nothing
            assert time.monotonic() - start < 4
    finally:
        server.shutdown()
        server.server_close()
