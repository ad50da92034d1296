"""Downloads from canonical URLs, redirected to a mirror by one environment variable.

Every asset is named by its canonical ``https://`` URL. ``GPT2LIB_MIRROR`` (an ``http://`` or
``file://`` base) sends every request to ``<mirror>/<host>/<path>`` instead, so an offline mirror
serves exactly what the internet serves. :func:`fetch` keeps what it fetched under
``cache_dir()/downloads/<host>/<path>``; :func:`download` does the transfer:

- it streams into ``<dest>.part`` with a progress bar and renames that onto ``dest`` only once it
  is complete and checked, so a file at ``dest`` is never a partial one;
- it resumes a ``.part`` left by an interrupted transfer with an HTTP ``Range`` request, and starts
  over when the server ignores the range (``200`` instead of ``206``);
- it retries transient failures (connection dropped or reset, timeout, HTTP 5xx, 408, 429) with
  exponential backoff;
- it checks the sha256 and the size when they are known; a file that fails is deleted;
- it raises :class:`DownloadError`, naming the URL and what went wrong, for an HTTP error such as
  404, retries exhausted, a hash or size mismatch, or a full disk.

Only the standard library (:mod:`urllib`) and tqdm are used.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "DownloadError",
    "cache_dir",
    "cache_path",
    "download",
    "fetch",
    "file_sha256",
    "mirror_url",
]

TIMEOUT = 30.0  # seconds without data before a connection or a read gives up
RETRIES = 5  # retries after the first attempt (each resumes where the last one stopped)
BACKOFF = 1.0  # seconds before the first retry; doubles with each further failure
MAX_BACKOFF = 60.0
CHUNK_SIZE = 1 << 18  # 256 KiB
_TRANSIENT_STATUS = {408, 425, 429}  # plus every 5xx
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DownloadError(Exception):
    """A download failed; the message names the URL and what went wrong."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url


class _TransientError(Exception):
    """An attempt failed in a way that another attempt may not (internal)."""


class _FatalError(Exception):
    """An attempt failed in a way that retrying will not fix (internal; becomes DownloadError)."""


def cache_dir() -> Path:
    """Where fetched files are kept: ``$GPT2LIB_HOME`` or ``~/.cache/gpt2lib``."""
    return Path(os.environ.get("GPT2LIB_HOME") or Path.home() / ".cache" / "gpt2lib")


def mirror_url(url: str) -> str:
    """Map ``https://HOST/PATH`` to ``$GPT2LIB_MIRROR/HOST/PATH`` when the mirror is set.

    The mirror is an ``http://``, ``https://`` or ``file://`` base URL; the query string of
    ``url`` is dropped. URLs that are not ``http(s)://`` (e.g. ``file://``) are returned as is.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    mirror = os.environ.get("GPT2LIB_MIRROR", "").strip()
    parts = urllib.parse.urlsplit(url)
    if not mirror or parts.scheme not in ("http", "https"):
        return url
    if urllib.parse.urlsplit(mirror).scheme not in ("http", "https", "file"):
        raise ValueError(
            f"GPT2LIB_MIRROR must be an http://, https:// or file:// base URL, got {mirror!r}"
        )
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"


def cache_path(url: str) -> Path:
    """Where :func:`fetch` keeps ``url``: ``cache_dir()/downloads/HOST/PATH``."""
    parts = urllib.parse.urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme not in ("http", "https") or not parts.netloc or not segments:
        raise ValueError(f"expected an http(s) URL naming a file, got {url!r}")
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"URL path may not contain '.' or '..' segments: {url!r}")
    return cache_dir().joinpath("downloads", parts.netloc, *segments)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, as lowercase hex, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check_expected(sha256: str | None, size: int | None) -> str | None:
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"size must be a non-negative int, got {size!r}")
    return sha256


def _problem(path: Path, sha256: str | None, size: int | None) -> str | None:
    """What is wrong with ``path`` given the expected hash and size, or None if it checks out."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size mismatch: expected {size} bytes, got {actual}"
    if sha256 is not None and (digest := file_sha256(path)) != sha256:
        return f"sha256 mismatch: expected {sha256}, got {digest}"
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def _progress(desc: str, total: int | None, initial: int, enabled: bool) -> Iterator[Any]:
    """A text progress bar (on stderr) that shows only if the transfer takes a while."""
    from tqdm import tqdm  # imported here: `import gpt2lib` stays light

    bar = tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        delay=0.5,
        mininterval=0.5,
        # pass `disable` only to switch the bar off: left unset, TQDM_DISABLE=1 still applies
        **({} if enabled else {"disable": True}),
    )
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock for ``dest``, so concurrent processes do not share one ``.part``.

    Lock files live in ``cache_dir()/locks``; where ``fcntl`` is missing (Windows) or the cache is
    not writable, nothing is locked.
    """
    try:
        import fcntl

        lock_dir = cache_dir() / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1(str(dest.resolve()).encode()).hexdigest()
        handle = open(lock_dir / f"{name}.lock", "a")  # noqa: SIM115 (closed below)
    except (ImportError, OSError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _classify_url_error(e: urllib.error.URLError, host: str) -> Exception:
    """Turn a failure to connect into a transient error or a clear final one."""
    reason = e.reason
    if isinstance(reason, TimeoutError):
        return _TransientError(f"timed out connecting to {host}")
    if isinstance(reason, ConnectionRefusedError):
        return _FatalError(f"connection refused by {host}")
    if isinstance(reason, ConnectionError):
        return _TransientError(f"connection to {host} failed: {_describe(reason)}")
    if isinstance(reason, socket.gaierror):
        return _FatalError(f"cannot resolve host {host} (offline? then set GPT2LIB_MIRROR)")
    return _FatalError(f"cannot reach {host}: {reason}")


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` from a ``Content-Range: bytes START-END/TOTAL`` header."""
    try:
        unit, _, rest = (value or "").partition(" ")
        span, _, total = rest.partition("/")
        start = int(span.split("-")[0]) if unit == "bytes" else None
        return start, (int(total) if total.strip().isdigit() else None)
    except ValueError:
        return None, None


def _transfer_http(
    source: str, part: Path, size: int | None, timeout: float, desc: str, progress: bool
) -> bool:
    """One attempt to complete ``part`` from ``source``, resuming it with a Range request.

    Returns True when ``part`` holds the whole body, False when the attempt should be repeated at
    once from byte zero (the server refused or mangled the range); raises :class:`_TransientError`
    for failures worth a retry and :class:`_FatalError` for final ones.
    """
    host = urllib.parse.urlsplit(source).netloc
    offset = _size(part)
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size and part.exists():
        return True  # a complete .part from an earlier run; it is checked next
    req = urllib.request.Request(source, headers={"User-Agent": "gpt2lib"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:  # the range starts past the end: start over
            part.unlink()
            return False
        if e.code >= 500 or e.code in _TRANSIENT_STATUS:
            raise _TransientError(f"HTTP {e.code} {e.reason}") from e
        raise _FatalError(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise _classify_url_error(e, host) from e
    except TimeoutError as e:
        raise _TransientError(f"no response from {host} within {timeout} s") from e
    except (ConnectionError, http.client.HTTPException, ssl.SSLError) as e:
        raise _TransientError(f"no response from {host}: {_describe(e)}") from e

    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if resp.status == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                if not offset:
                    raise _FatalError(f"unexpected partial response starting at byte {start}")
                part.unlink()
                return False
            if total is None and length is not None:
                total = offset + length
        else:  # 200: the whole file, whatever range we asked for
            offset, total = 0, length
        if size is not None and total is not None and total != size:
            part.unlink(missing_ok=True)
            raise _FatalError(f"size mismatch: expected {size} bytes, the server has {total}")
        received = 0
        with (
            open(part, "ab" if offset else "wb") as f,
            _progress(desc, total or size, offset, progress) as bar,
        ):
            while True:
                try:
                    chunk = resp.read1(CHUNK_SIZE)  # what has arrived: no bytes lost on error
                except TimeoutError as e:
                    msg = f"timed out after {offset + received} bytes (no data for {timeout} s)"
                    raise _TransientError(msg) from e
                except (ConnectionError, http.client.HTTPException, ssl.SSLError) as e:
                    msg = f"connection lost after {offset + received} bytes: {_describe(e)}"
                    raise _TransientError(msg) from e
                if not chunk:
                    break
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    if total is not None and offset + received != total:
        raise _TransientError(f"connection closed after {offset + received} of {total} bytes")
    return True


def _copy_file(source: str, part: Path, desc: str, progress: bool) -> None:
    """Copy a ``file://`` URL into ``part`` (no retries: local errors are final)."""
    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
    if not path.is_file():
        raise _FatalError(f"not found: {path} does not exist")
    total = path.stat().st_size
    with (
        open(path, "rb") as src,
        open(part, "wb") as dst,
        _progress(desc, total, 0, progress) as bar,
    ):
        while chunk := src.read(CHUNK_SIZE):
            dst.write(chunk)
            bar.update(len(chunk))
        dst.flush()
        os.fsync(dst.fileno())


def _fill_part(
    source: str,
    part: Path,
    size: int | None,
    timeout: float,
    retries: int,
    backoff: float,
    progress: bool,
    desc: str,
) -> None:
    """Complete ``part`` from ``source``: at most ``1 + retries`` attempts, with backoff.

    Each retry resumes from what the earlier attempts wrote.
    """
    if urllib.parse.urlsplit(source).scheme == "file":
        _copy_file(source, part, desc, progress)
        return
    failures = 0
    while True:
        try:
            if _transfer_http(source, part, size, timeout, desc, progress):
                return
            continue  # the server refused the range: start from zero at once
        except _TransientError as e:
            failures += 1
            if failures > retries:
                tries = f"{failures} attempt{'s' if failures > 1 else ''}"
                raise _FatalError(f"giving up after {tries}; last error: {e}") from e
            time.sleep(min(MAX_BACKOFF, backoff * 2 ** (failures - 1)))


def _download(
    url: str,
    dest: Path,
    sha256: str | None,
    size: int | None,
    timeout: float | None,
    retries: int | None,
    backoff: float | None,
    progress: bool,
) -> Path:
    """:func:`download` without the lock."""
    source = mirror_url(url)
    where = url if source == url else f"{url} (from {source})"
    timeout = TIMEOUT if timeout is None else timeout
    retries = RETRIES if retries is None else retries
    backoff = BACKOFF if backoff is None else backoff
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        stale = _size(part) > 0  # bytes from an earlier, interrupted run
        while True:
            _fill_part(source, part, size, timeout, retries, backoff, progress, dest.name)
            problem = _problem(part, sha256, size)
            if problem is None:
                os.replace(part, dest)  # atomic: dest is complete or absent
                return dest
            part.unlink()
            if not stale:
                raise DownloadError(where, f"{problem}; the file was not kept")
            stale = False  # the old bytes may have been the bad ones: start afresh, once
    except _FatalError as e:
        raise DownloadError(where, str(e)) from (e.__cause__ or e)
    except OSError as e:
        part.unlink(missing_ok=True)
        if e.errno in _DISK_FULL:
            msg = f"disk full while writing {part} ({e.strerror}); the partial file was removed"
            raise DownloadError(where, msg) from e
        raise DownloadError(where, f"cannot write {dest}: {e}") from e


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    size: int | None = None,
    *,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` (through :func:`mirror_url`) to ``dest``, checked; return ``dest``.

    The bytes go to ``<dest>.part`` first, which is renamed onto ``dest`` once it is complete and
    matches ``sha256`` and ``size`` where they are given; a ``.part`` left over from an
    interrupted run is resumed. ``timeout`` (seconds without data, default :data:`TIMEOUT`),
    ``retries`` (default :data:`RETRIES`) and ``backoff`` (first wait in seconds, default
    :data:`BACKOFF`) tune the retry loop. Raises :class:`DownloadError` when it fails; ``dest``
    is then left as it was. Only a ``.part`` whose transfer ran out of retries is kept (a later
    call resumes it); one that failed its check, or that filled the disk, is deleted.
    """
    sha256 = _check_expected(sha256, size)
    if urllib.parse.urlsplit(mirror_url(url)).scheme not in ("http", "https", "file"):
        raise ValueError(f"expected an http://, https:// or file:// URL, got {url!r}")
    dest = Path(dest)
    with _locked(dest):
        return _download(url, dest, sha256, size, timeout, retries, backoff, progress)


def fetch(
    url: str,
    sha256: str | None = None,
    size: int | None = None,
    *,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` once into the cache (:func:`cache_path`) and return the cached path.

    A cached file is checked against ``sha256`` and ``size`` where given (the hash costs a read
    of the file); one that fails is deleted and fetched again. Keyword arguments are as for
    :func:`download`.
    """
    sha256 = _check_expected(sha256, size)
    dest = cache_path(url)
    with _locked(dest):
        if dest.is_file():
            if _problem(dest, sha256, size) is None:
                return dest
            dest.unlink()
        return _download(url, dest, sha256, size, timeout, retries, backoff, progress)
