"""Files that are never half-written: atomic writes, a file's sha256, a lock, clear read errors.

Every place in gpt2lib that writes a file a user keeps (a saved model, a checkpoint, scores,
downloads, caches) goes through this module, so the habits live in one place:

- :func:`atomic_write` writes under a temporary name in the same folder, flushes it to disk
  and renames it over the target with :func:`os.replace`: a reader sees the old file or the new
  one, never a mix. Temporaries are named ``.<name>.<pid>.<random>.tmp``; one left behind by a
  process that was killed is removed by the next write of the same file
  (:func:`remove_stale_temporaries`).
- :func:`atomic_dir` does the same for a whole directory. Where Linux's ``renameat2`` with
  ``RENAME_EXCHANGE`` is available the old and the new directory swap places in one step; on
  other systems two renames remain, and a directory left aside by a crash between them is put
  back by the next :func:`atomic_dir` of that target.
- :func:`sha256_file` hashes a file in chunks; :func:`file_lock` serialises processes.
- :func:`read_text` and :func:`read_json` read a file a user handed us, and raise
  :class:`FileFormatError` naming the file and what is wrong (not UTF-8, not JSON, ...).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "FileFormatError",
    "atomic_dir",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_lock",
    "read_json",
    "read_text",
    "remove_stale_temporaries",
    "sha256_file",
]


class FileFormatError(ValueError):
    """A file exists but does not hold what it should; the message names the file."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, as lowercase hex, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- temporaries ----------------------------------------------------------------------------

_TMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(?:\.old)?")


def _temporary(path: Path, suffix: str = ".tmp") -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporaries of ``path`` (files or folders) whose writing process is gone.

    A ``kill -9`` during a write leaves ``.<name>.<pid>.<random>.tmp`` behind; nothing else
    ever removes it. Temporaries of live processes (a concurrent writer) are left alone.
    Returns what was removed.
    """
    path = Path(path)
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in path.parent.iterdir():
            match = _TMP.fullmatch(entry.name)
            if not match or match["name"] != path.name or _alive(int(match["pid"])):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- files ----------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Write ``path`` atomically: ``with atomic_write(p, "w", "utf-8") as f: f.write(...)``.

    The file object is a temporary in the same folder; when the block ends without an
    exception it is flushed, synced and renamed over ``path``. On an exception ``path`` is
    left as it was and the temporary is removed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write opens files with mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temporary(path)
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_write`, for writers that take a path (``torch.save``, safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temporary(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return ``path``."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


# --- directories ----------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2``); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # old kernel, or a file system without the flag
    raise OSError(err, os.strerror(err), str(b))


def _restore_set_aside(target: Path) -> None:
    """Put back a directory that a crash between two renames left as ``.<name>.*.tmp.old``."""
    if target.exists():
        return
    aside = sorted(target.parent.glob(f".{target.name}.*.tmp.old"), key=os.path.getmtime)
    if aside:
        os.replace(aside[-1], target)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``target`` as a whole on success.

    A reader of ``target`` sees the complete old directory or the complete new one. Raises
    ``FileExistsError`` if ``target`` is a non-empty directory and ``overwrite`` is False.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _restore_set_aside(target)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} exists and is not empty (pass overwrite=True)")
    remove_stale_temporaries(target)
    tmp = _temporary(target)
    tmp.mkdir()  # unlike tempfile.mkdtemp, honours the umask (0o755 usually)
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
        elif _exchange(tmp, target):
            shutil.rmtree(tmp)  # now the old directory
        else:
            aside = tmp.with_name(tmp.name + ".old")
            os.replace(target, aside)  # a crash here is undone by the next atomic_dir
            os.replace(tmp, target)
            shutil.rmtree(aside)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# --- locks ----------------------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if needed) for the block.

    Where ``fcntl`` is missing (Windows) or the lock file cannot be created, nothing is locked.
    """
    try:
        import fcntl

        Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a")  # noqa: SIM115 (closed below)
    except (ImportError, OSError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- reading what users hand us ---------------------------------------------------------------


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of ``path``, without a leading byte-order mark (as Windows editors write
    it); :class:`FileFormatError` if it is not UTF-8."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FileFormatError(
            path,
            f"the {what} is not UTF-8 text (byte {err.start}: {data[err.start : err.start + 4]!r})",
        ) from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The parsed JSON of ``path``; :class:`FileFormatError` if it is not UTF-8 JSON."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FileFormatError(path, f"the {what} is not valid JSON: {err}") from None
