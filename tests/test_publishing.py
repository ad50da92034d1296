"""Publishing: one repository URL, the asset-fetching command, the license and citation files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

from tools.offline import shared_assets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import fetch_assets  # noqa: E402
import repository_url  # noqa: E402

SHARED = shared_assets()


def test_every_chapter_installs_from_the_configured_repository() -> None:
    assert repository_url.sync() == []  # nothing stale
    url = repository_url.configured_url()
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    naming = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file() or path.suffix in (".safetensors", ".png"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if name.startswith("book/") and name.endswith(".ipynb"):
            text = repository_url.INSTALL_LINE.sub("", text)  # the generated install line
        if url.removeprefix("https://") in text:
            naming.append(name)
    assert naming == ["_config.yml"]  # the one place


def test_changing_the_url_in_config_moves_every_chapter(tmp_path: Path) -> None:
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copytree(ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("outputs"))
    config = tmp_path / "_config.yml"
    old = repository_url.configured_url(tmp_path)
    config.write_text(config.read_text().replace(old, "https://github.com/someone/fork"))
    stale = repository_url.sync(tmp_path, write=True)
    assert len(stale) == len(repository_url.chapters(tmp_path)) >= 8
    assert repository_url.sync(tmp_path) == []
    first = json.loads(stale[0].read_text())["cells"][1]["source"]
    assert any('REPO = "https://github.com/someone/fork"' in line for line in first)


def test_fetch_assets_assembles_the_offline_folder(canonical_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPT2LIB_MIRROR", canonical_server)
    monkeypatch.setenv("GPT2LIB_HOME", str(tmp_path / "home"))
    out = tmp_path / "assets"
    assert fetch_assets.main(["--out", str(out)]) == 0
    for path in (SHARED / "mirror").rglob("*"):
        if path.is_file():
            assert (
                out / "mirror" / path.relative_to(SHARED / "mirror")
            ).read_bytes() == path.read_bytes()
    for path in (SHARED / "reference").rglob("*"):
        if path.is_file():
            assert (out / path.relative_to(SHARED)).read_bytes() == path.read_bytes()
    assert "10 of 10 assets" in capsys.readouterr().out


def test_fetch_assets_fails_on_a_wrong_hash(canonical_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPT2LIB_MIRROR", canonical_server)
    monkeypatch.setenv("GPT2LIB_HOME", str(tmp_path / "home"))
    table = json.loads(fetch_assets.TABLE.read_text())
    table["assets"] = table["assets"][2:4]
    table["assets"][0]["sha256"] = "0" * 64  # the zip's inner file
    table["assets"][1]["sha256"] = "1" * 64
    (tmp_path / "t.json").write_text(json.dumps(table))
    assert (
        fetch_assets.main(["--out", str(tmp_path / "a"), "--table", str(tmp_path / "t.json")]) == 1
    )
    err = capsys.readouterr().err
    assert "sms+spam+collection.zip: SMSSpamCollection inside has sha256" in err
    assert "instruction-data.json" in err and "sha256 mismatch" in err
    assert not any(p.is_file() for p in (tmp_path / "a").rglob("*"))  # nothing kept


def test_license_and_citation() -> None:
    assert "Apache License" in (ROOT / "LICENSE").read_text().splitlines()[0]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "Apache-2.0"
    assert any("From Scratch" in ref["title"] for ref in citation["references"])


def test_the_readmes_jupyter_lab_command_exists() -> None:
    """README: `.venv/bin/jupyter lab book/` after the set-up command (jupyterlab is required)."""
    assert "jupyter lab book/" in (ROOT / "README.md").read_text()
    version = subprocess.run(
        [sys.executable, "-m", "jupyterlab", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip()[0].isdigit()
