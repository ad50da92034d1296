"""Downloads from canonical URLs, redirected to a mirror by one environment variable."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .files import atomic_write_text, file_lock, sha256_file

TIMEOUT = 30.0  # seconds without data before a connection or a read gives up
RETRIES = 5  # retries after the first attempt
BACKOFF = 1.0  # seconds before the first retry; doubles with each further failure
CHUNK_SIZE = 1 << 18  # 256 KiB
_TRANSIENT_STATUS = {408, 425, 429}  # plus every 5xx
_NETWORK_ERRORS = (ConnectionError, TimeoutError, http.client.HTTPException, ssl.SSLError)


class DownloadError(Exception):
    """A download failed; the message names the URL and what went wrong (``status``: the HTTP
    status code when the server answered with an error)."""

    def __init__(self, url: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {message}")
        self.url, self.status = url, status


class _Transient(Exception):
    """An attempt failed in a way that another attempt may not."""


class _Fatal(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def cache_dir() -> Path:
    """Where fetched files are kept: ``$GPT2LIB_HOME`` or ``~/.cache/gpt2lib``."""
    return Path(os.environ.get("GPT2LIB_HOME") or Path.home() / ".cache" / "gpt2lib")


def mirror_url(url: str) -> str:
    """Map ``https://HOST/PATH`` to ``$GPT2LIB_MIRROR/HOST/PATH`` when the mirror is set (the
    query string is dropped); other URLs, and every URL without a mirror, are returned as is."""
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
    """Where :func:`fetch` keeps ``url``: ``cache_dir()/downloads/HOST/PATH``. A URL whose host
    or path segments (decoded, ``%2e%2e``) could name a place outside ``downloads/`` is refused."""
    parts = urllib.parse.urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme not in ("http", "https") or not parts.netloc or not segments:
        raise ValueError(f"expected an http(s) URL naming a file, got {url!r}")
    if (parts.hostname or "").strip(".") == "" or "\\" in parts.netloc:
        raise ValueError(f"URL host {parts.netloc!r} is not a host name: {url!r}")
    for segment in segments:
        decoded = urllib.parse.unquote(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded:
            raise ValueError(
                f"URL path segment {segment!r} would leave the cache folder "
                f"(it means {decoded!r}): {url!r}"
            )
    return cache_dir().joinpath("downloads", parts.netloc, *segments)


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    name = urllib.parse.urlsplit(url).hostname or ""
    try:
        return name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _record_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.download.json")


def is_cached(dest: str | os.PathLike, sha256: str | None = None, size: int | None = None) -> bool:
    """Whether ``dest`` is a complete download: its recorded size (and, where given, ``sha256``
    and ``size``) match. A file this module did not record is not trusted."""
    dest = Path(dest)
    try:
        record = json.loads(_record_path(dest).read_text(encoding="utf-8"))
        actual, recorded = dest.stat().st_size, int(record["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if actual != recorded or (size is not None and actual != size):
        return False
    return sha256 is None or (sha256 == record.get("sha256") and sha256_file(dest) == sha256)


def discard(dest: str | os.PathLike) -> None:
    """Delete a downloaded file and its record (e.g. a cached file that failed to read)."""
    Path(dest).unlink(missing_ok=True)
    _record_path(Path(dest)).unlink(missing_ok=True)


def _check_expected(sha256: str | None, size: int | None) -> str | None:
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"size must be a non-negative int, got {size!r}")
    return sha256


def _header_int(value: str | None) -> int | None:
    value = (value or "").strip()  # str.isdigit() also accepts "²", which int() rejects
    return int(value) if re.fullmatch(r"[0-9]{1,19}", value) else None


def _open(request: urllib.request.Request, timeout: float) -> Any:
    """``urlopen``, except that a loopback host (a local mirror) is reached without a proxy."""
    handlers = [urllib.request.ProxyHandler({})] if is_loopback(request.full_url) else []
    return urllib.request.build_opener(*handlers).open(request, timeout=timeout)


def _connect_error(e: urllib.error.URLError, url: str) -> Exception:
    """A failure to connect, as a transient error or a final one that names who refused."""
    host = urllib.parse.urlsplit(url).netloc
    proxy = None if is_loopback(url) else urllib.request.getproxies().get(
        urllib.parse.urlsplit(url).scheme
    )  # fmt: skip
    reason = e.reason
    if isinstance(reason, ConnectionRefusedError):
        who = f"the proxy {proxy} (on the way to {host})" if proxy else host
        return _Fatal(f"connection refused by {who}")
    if isinstance(reason, socket.gaierror):
        if proxy:
            return _Fatal(f"cannot resolve the proxy {proxy} (on the way to {host})")
        return _Fatal(f"cannot resolve host {host} (offline? then set GPT2LIB_MIRROR)")
    if isinstance(reason, (TimeoutError, ConnectionError)):
        return _Transient(f"connection to {host} failed: {reason or type(reason).__name__}")
    return _Fatal(f"cannot reach {host}: {reason}")


def _attempt(source: str, part: Path, size: int | None, checked: bool, timeout: float,
             progress: bool) -> None:  # fmt: skip
    """One request that brings ``part`` to the end of the file, from where it stands."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset >= size:
        if offset == size:
            return  # complete from an earlier attempt; it is checked next
        part.unlink()
        offset = 0
    request = urllib.request.Request(source, headers={"User-Agent": "gpt2lib"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = _open(request, timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            return  # nothing after our bytes: the checksum decides whether they are the file
        if e.code >= 500 or e.code in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {e.code} {e.reason}") from e
        raise _Fatal(f"HTTP {e.code} {e.reason}", status=e.code) from e
    except urllib.error.URLError as e:
        raise _connect_error(e, source) from e
    except _NETWORK_ERRORS as e:
        raise _Transient(f"no response within {timeout} s: {e or type(e).__name__}") from e
    with response:
        length = _header_int(response.headers.get("Content-Length"))
        if response.status == 206:
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers["Content-Range"] or "")
            if not match or int(match[1]) != offset:
                part.unlink()  # an answer for other bytes: start again from zero
                raise _Transient(f"the server answered a Range request with {match}")
            total = int(match[2]) if match[2] != "*" else None
        else:  # 200: the whole file (a server that ignores ranges, or a new version)
            offset, total = 0, length
        if total is None and size is None and not checked:
            raise _Fatal(
                "the server stated no length, so the download cannot be checked for "
                "completeness; pass size= or sha256="
            )
        if size is not None and total is not None and total != size:
            part.unlink(missing_ok=True)
            raise _Fatal(f"size mismatch: expected {size} bytes, the server has {total}")
        received = _read_body(response, part, offset, total, progress)
    if total is not None and offset + received != total:
        raise _Transient(f"connection closed after {offset + received} of {total} bytes")


def _read_body(response: Any, part: Path, offset: int, total: int | None, progress: bool) -> int:
    """Append the body to ``part`` (from ``offset``), with a progress bar on stderr that shows
    only if the transfer takes a while; return the bytes received."""
    from tqdm import tqdm  # imported here: `import gpt2lib` stays light

    received = 0
    bar = tqdm(total=total, initial=offset, desc=part.name.removesuffix(".part"), unit="B",
               unit_scale=True, unit_divisor=1024, leave=False, delay=0.5,
               # `disable` only to switch the bar off: left unset, TQDM_DISABLE=1 still applies
               **({} if progress else {"disable": True}))  # fmt: skip
    with open(part, "ab" if offset else "wb") as f, bar:
        while True:
            try:
                chunk = response.read1(CHUNK_SIZE)  # what has arrived: nothing lost on an error
            except _NETWORK_ERRORS as e:
                raise _Transient(f"connection lost after {offset + received} bytes: {e}") from e
            if not chunk:
                break
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
        f.flush()
        os.fsync(f.fileno())
    return received


def _fill(source: str, part: Path, size: int | None, checked: bool, timeout: float,
          retries: int, backoff: float, progress: bool) -> None:  # fmt: skip
    """Bring ``part`` to the whole body of ``source``: at most ``1 + retries`` attempts."""
    if urllib.parse.urlsplit(source).scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
        if not path.is_file():
            raise _Fatal(f"not found: {path} does not exist")
        shutil.copyfile(path, part)
        return
    failures = 0
    while True:
        if not checked:
            part.unlink(missing_ok=True)  # nothing would catch a splice: always from zero
        try:
            return _attempt(source, part, size, checked, timeout, progress)
        except _Transient as e:
            failures += 1
            if failures > retries:
                tries = f"{failures} attempt{'s' if failures > 1 else ''}"
                raise _Fatal(f"giving up after {tries}; last error: {e}") from e
            time.sleep(min(60.0, backoff * 2 ** (failures - 1)))


def _download(url: str, dest: Path, sha256: str | None, size: int | None, timeout: float | None,
              retries: int | None, backoff: float | None, progress: bool = True) -> Path:  # fmt: skip
    """:func:`download` without the lock."""
    source = mirror_url(url)
    where = url if source == url else f"{url} (from {source})"
    part = dest.with_name(dest.name + ".part")
    timeout = TIMEOUT if timeout is None else timeout
    retries = RETRIES if retries is None else retries
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        resumed = sha256 is not None and part.exists()
        while True:
            _fill(source, part, size, sha256 is not None, timeout, retries,
                  BACKOFF if backoff is None else backoff, progress)  # fmt: skip
            actual, digest = part.stat().st_size, sha256_file(part)
            if size is not None and actual != size:
                problem = f"size mismatch: expected {size} bytes, got {actual}"
            elif sha256 is not None and digest != sha256:
                problem = f"sha256 mismatch: expected {sha256}, got {digest}"
            else:
                _record_path(dest).unlink(missing_ok=True)  # no record of the old file
                os.replace(part, dest)  # atomic: dest is complete or absent
                record = {"url": url, "size": actual, "sha256": digest}
                atomic_write_text(_record_path(dest), json.dumps(record) + "\n")
                return dest
            part.unlink()
            if not resumed:
                raise DownloadError(where, f"{problem}; the file was not kept")
            resumed = False  # the earlier bytes may have been the bad ones: once from zero
    except _Fatal as e:
        raise DownloadError(where, str(e), e.status) from (e.__cause__ or e)
    except OSError as e:
        part.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            msg = f"disk full while writing {part} ({e.strerror}); the partial file was removed"
            raise DownloadError(where, msg) from e
        raise DownloadError(where, f"cannot write {dest}: {e}") from e


def _locked(dest: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock for ``dest``, so that concurrent processes do not share a ``.part``."""
    name = hashlib.sha1(str(dest.resolve()).encode()).hexdigest()
    return file_lock(cache_dir() / "locks" / f"{name}.lock")


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

    ``timeout``: seconds without data (default :data:`TIMEOUT`); ``retries`` (default
    :data:`RETRIES`) and ``backoff`` (first wait in seconds, :data:`BACKOFF`) tune the retry
    loop; ``progress=False`` hides the progress bar. Raises :class:`DownloadError`, leaving ``dest`` as it was; a ``.part`` whose transfer
    ran out of retries is kept only when a ``sha256`` will check its resumption.
    """
    sha256 = _check_expected(sha256, size)
    if urllib.parse.urlsplit(mirror_url(url)).scheme not in ("http", "https", "file"):
        raise ValueError(f"expected an http://, https:// or file:// URL, got {url!r}")
    dest = Path(dest)
    with _locked(dest):
        return _download(url, dest, sha256, size, timeout, retries, backoff, progress)


def fetch(url: str, sha256: str | None = None, size: int | None = None, *,
          refresh: bool = False, **kwargs: Any) -> Path:  # fmt: skip
    """Download ``url`` once into the cache (:func:`cache_path`); return the cached path.

    A cached file is used when :func:`is_cached` vouches for it; one that fails, and any with
    ``refresh=True`` (e.g. after it failed to read), is fetched again. ``kwargs`` as for
    :func:`download`.
    """
    sha256 = _check_expected(sha256, size)
    dest = cache_path(url)
    with _locked(dest):
        if not refresh and is_cached(dest, sha256, size):
            return dest
        discard(dest)
        return _download(url, dest, sha256, size, kwargs.get("timeout"), kwargs.get("retries"),
                         kwargs.get("backoff"), kwargs.get("progress", True))  # fmt: skip
