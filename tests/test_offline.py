"""tools.offline and .assets: where the offline assets come from, and a fresh clone
(no ../shared beside it) that fetches them from their canonical URLs, sha256-checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt2lib.files import FileFormatError
from tools import offline
from tools.assets import COMPLETE, assets_table, fetch_assets

SHARED = offline.shared_assets()


def test_the_assets_folder_given_beside_or_fetched(tmp_path: Path, monkeypatch) -> None:
    repo = tmp_path / "clone"
    repo.mkdir()
    monkeypatch.setattr(offline, "REPO", repo)
    monkeypatch.delenv("GPT2LIB_ASSETS", raising=False)
    assert offline._assets_folder() == (repo / "build" / "assets", True)  # a fresh clone
    (tmp_path / "shared" / "assets" / "mirror").mkdir(parents=True)
    assert offline._assets_folder() == (tmp_path / "shared" / "assets", False)  # beside
    monkeypatch.setenv("GPT2LIB_ASSETS", str(tmp_path / "elsewhere"))
    assert offline.shared_assets() == tmp_path / "elsewhere"  # given: used as it is


def test_fetch_assets_fills_the_folder_once(canonical_server: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GPT2LIB_MIRROR", canonical_server)
    monkeypatch.setenv("GPT2LIB_HOME", str(tmp_path / "home"))
    out = fetch_assets(tmp_path / "assets")
    for path in (SHARED / "mirror").rglob("*"):
        if path.is_file():
            assert (out / "mirror" / path.relative_to(SHARED / "mirror")).read_bytes() == path.read_bytes()
    assert (out / COMPLETE).is_file() and len(assets_table()) == 10
    monkeypatch.setenv("GPT2LIB_MIRROR", "http://127.0.0.1:9")  # nothing answers there
    assert fetch_assets(out) == out  # complete: nothing is fetched again


def test_a_wrong_file_is_refused_and_the_folder_stays_incomplete(
    canonical_server: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("GPT2LIB_MIRROR", canonical_server)
    monkeypatch.setenv("GPT2LIB_HOME", str(tmp_path / "home"))
    table = json.loads((Path(offline.__file__).with_name("assets.json")).read_text())
    table["assets"] = table["assets"][2:3]  # the zip, checked by the file inside it
    table["assets"][0]["sha256"] = "0" * 64
    (tmp_path / "t.json").write_text(json.dumps(table))
    with pytest.raises(FileFormatError, match="SMSSpamCollection inside has sha256"):
        fetch_assets(tmp_path / "a", tmp_path / "t.json")
    assert not (tmp_path / "a" / COMPLETE).exists()
