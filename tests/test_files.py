"""gpt2lib.files: atomic writes of files and directories, stale temporaries, locks, read errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2lib.files import (
    FileFormatError,
    atomic_dir,
    atomic_path,
    atomic_write_text,
    read_json,
    read_text,
    sha256_file,
)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_write_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("crash")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_stale_temporaries_only_of_dead_processes(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    stale = tmp_path / f".x.bin.{dead_pid()}.0123abcd.tmp"
    live = tmp_path / f".x.bin.{os.getpid()}.89abcdef.tmp"  # a concurrent writer: ours
    other = tmp_path / f".y.bin.{dead_pid()}.0123abcd.tmp"  # another file's
    for p in (stale, live, other):
        p.write_bytes(b"x")
    atomic_write_text(target, "new")  # the next write of x.bin removes its dead writer's temporary
    assert not stale.exists() and live.exists() and other.exists() and target.read_text() == "new"


def _make(directory: Path, text: str) -> None:
    (directory / "a.txt").write_text(text)
    (directory / "b.txt").write_text(text)


def test_atomic_dir_replaces_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        _make(tmp, "one")
    with pytest.raises(FileExistsError):
        with atomic_dir(target):
            pass
    with atomic_dir(target, overwrite=True) as tmp:
        _make(tmp, "two")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.txt": "two", "b.txt": "two"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_dir_recovers_a_crash_between_the_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        _make(tmp, "old")
    real = os.replace
    calls = []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the renames")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # a killed process cleans nothing
    with pytest.raises(KeyboardInterrupt), atomic_dir(target, overwrite=True) as tmp:
        _make(tmp, "new")
    monkeypatch.undo()
    assert not target.exists()  # the gap between the renames; the next atomic_dir closes it
    with pytest.raises(FileExistsError), atomic_dir(target):
        pass
    assert (target / "a.txt").read_text() == "old"


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(FileFormatError, match=r"conf\.json: the config is not UTF-8"):
        read_text(path, "config")
    path.write_text('{"a": ')
    with pytest.raises(FileFormatError, match=r"conf\.json: the config is not valid JSON"):
        read_json(path, "config")
    assert isinstance(FileFormatError(path, "x"), ValueError)


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
