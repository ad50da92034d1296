"""Tests for gpt2lib.mirror: building a mirror with a stand-in checkpoint and serving it over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from gpt2lib import mirror
from gpt2lib.config import GPTConfig
from gpt2lib.mirror import MODELS_PATH, build_mirror, random_gpt2, register_model, serve
from gpt2lib.weights import GPT2_FILES, download_gpt2, model_from_openai_checkpoint

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "assets" / "mirror"
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
    assert encoder.is_symlink() and encoder.resolve() == (SOURCE / ENCODER).resolve()
    ckpt = out / MODELS_PATH / "stand-in-tiny"
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(GPT2_FILES)
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
    assert sorted(entry["files"]) == sorted(GPT2_FILES)


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
    monkeypatch.setattr(mirror, "_factory_for_test", lambda: random_gpt2(cfg, 7), raising=False)
    register_model("test-8", "gpt2lib.mirror:_factory_for_test", "an 8-dim test model")
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

    serve_cmd = [sys.executable, "-m", "gpt2lib.mirror", "serve", tmp_path / "out", "--port", "0"]
    with subprocess.Popen(serve_cmd, cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        try:
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert get(f"{url}/example.org/file.txt")[::2] == (200, b"hello mirror\n")
        finally:
            proc.terminate()
