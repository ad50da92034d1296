"""Downloads from canonical URLs, redirected to a mirror by one environment variable.

Every asset is named by its canonical ``https://`` URL. ``GPT2LIB_MIRROR`` (an ``http://`` or
``file://`` base) sends every request to ``<mirror>/<host>/<path>`` instead, so an offline mirror
serves exactly what the internet serves. :func:`fetch` keeps what it fetched under
``cache_dir()/downloads/<host>/<path>``; :func:`download` does the transfer:

- it streams into ``<dest>.part`` with a progress bar and renames that onto ``dest`` only once it
  is complete and checked, so a file at ``dest`` is never a partial one;
- it resumes a ``.part`` left by an interrupted transfer with an HTTP ``Range`` request that
  carries ``If-Range`` (the ``ETag`` or ``Last-Modified`` of the first response), and starts over
  when the server answers with the whole file (``200``): a file that changed on the server in
  between is never spliced from two versions. A ``.part`` with no such validator is resumed
  only when a sha256 will check the result;
- a body whose length nobody states (no ``Content-Length``, no size, no sha256) is confirmed
  complete by asking for the bytes after it (``416``: there are none);
- it retries transient failures (connection dropped or reset, timeout, HTTP 5xx, 408, 429) with
  exponential backoff;
- it checks the sha256 and the size when they are known; a file that fails is deleted;
- it raises :class:`DownloadError`, naming the URL and what went wrong, for an HTTP error such as
  404, retries exhausted, a hash or size mismatch, or a full disk;
- it records what it installed (size and sha256, in ``.<name>.download.json`` beside the file),
  so that :func:`fetch` and :func:`is_cached` can tell a complete cached file from a damaged one
  even when the caller knows no hash;
- requests to a loopback host (a local mirror) never go through ``http_proxy``.

Only the standard library (:mod:`urllib`) and tqdm are used.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .files import atomic_write_text, file_lock, sha256_file

__all__ = [
    "DownloadError",
    "cache_dir",
    "cache_path",
    "discard",
    "download",
    "fetch",
    "is_cached",
    "is_loopback",
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
    """A download failed; the message names the URL and what went wrong.

    ``status`` is the HTTP status code when the server answered with an error (e.g. 404).
    """

    def __init__(self, url: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {message}")
        self.url, self.status = url, status


class _TransientError(Exception):
    """An attempt failed in a way that another attempt may not (internal)."""


class _FatalError(Exception):
    """An attempt failed in a way that retrying will not fix (internal; becomes DownloadError)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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
    """Where :func:`fetch` keeps ``url``: ``cache_dir()/downloads/HOST/PATH``.

    A URL that could name a place outside ``downloads/`` is refused: a host of ``.`` or
    ``..``, and path segments that are, or decode to (``%2e%2e``), ``.`` or ``..``, or that
    hold a (back)slash once decoded.
    """
    parts = urllib.parse.urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme not in ("http", "https") or not parts.netloc or not segments:
        raise ValueError(f"expected an http(s) URL naming a file, got {url!r}")
    host = parts.hostname or ""
    if host.strip(".") == "" or "\\" in parts.netloc:
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
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _record_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.download.json")


def _validator_path(part: Path) -> Path:
    return part.with_name(f".{part.name}.validator")


def _discard_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    _validator_path(part).unlink(missing_ok=True)


def is_cached(dest: str | os.PathLike, sha256: str | None = None, size: int | None = None) -> bool:
    """Whether ``dest`` is a complete download: its recorded size (and, where given, ``sha256``
    and ``size``) match. A file this module did not record is not trusted."""
    dest = Path(dest)
    if not dest.is_file():
        return False
    try:
        record = json.loads(_record_path(dest).read_text(encoding="utf-8"))
        recorded_size = int(record["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    actual = dest.stat().st_size
    if actual != recorded_size or (size is not None and actual != size):
        return False
    return sha256 is None or (
        sha256.lower() == record.get("sha256") and sha256_file(dest) == sha256.lower()
    )


def discard(dest: str | os.PathLike) -> None:
    """Delete a downloaded file and its record (e.g. a cached file that failed to read)."""
    dest = Path(dest)
    dest.unlink(missing_ok=True)
    _record_path(dest).unlink(missing_ok=True)


def _check_expected(sha256: str | None, size: int | None) -> str | None:
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"size must be a non-negative int, got {size!r}")
    return sha256


def _problem(path: Path, sha256: str | None, size: int | None) -> tuple[str | None, str]:
    """``(what is wrong or None, the file's sha256)``: one read of the file."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size mismatch: expected {size} bytes, got {actual}", ""
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        return f"sha256 mismatch: expected {sha256}, got {digest}", digest
    return None, digest


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


def _locked(dest: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock for ``dest`` (in ``cache_dir()/locks``), so that concurrent processes
    do not share one ``.part``."""
    name = hashlib.sha1(str(dest.resolve()).encode()).hexdigest()
    return file_lock(cache_dir() / "locks" / f"{name}.lock")


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _proxy_for(url: str) -> str | None:
    """The proxy urllib would use for ``url`` (None for loopback hosts: we bypass it)."""
    if is_loopback(url):
        return None
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _open(request: urllib.request.Request, timeout: float) -> Any:
    """Open ``request``; a loopback host is always reached directly, never by proxy.

    A fresh opener each time: ``urlopen``'s global one keeps the proxy settings of its first use.
    """
    handlers = [urllib.request.ProxyHandler({})] if is_loopback(request.full_url) else []
    return urllib.request.build_opener(*handlers).open(request, timeout=timeout)


def _classify_url_error(e: urllib.error.URLError, host: str, proxy: str | None) -> Exception:
    """Turn a failure to connect into a transient error or a clear final one."""
    reason = e.reason
    via = f" through the proxy {proxy} (from http_proxy/https_proxy)" if proxy else ""
    peer = f"the proxy {proxy}" if proxy else host
    if isinstance(reason, TimeoutError):
        return _TransientError(f"timed out connecting to {host}{via}")
    if isinstance(reason, ConnectionRefusedError):
        return _FatalError(
            f"connection refused by {peer}{' (on the way to ' + host + ')' if proxy else ''}"
        )
    if isinstance(reason, ConnectionError):
        return _TransientError(f"connection to {host}{via} failed: {_describe(reason)}")
    if isinstance(reason, socket.gaierror):
        if proxy:
            return _FatalError(f"cannot resolve the proxy {proxy} (on the way to {host})")
        return _FatalError(f"cannot resolve host {host} (offline? then set GPT2LIB_MIRROR)")
    return _FatalError(f"cannot reach {host}{via}: {reason}")


_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also accepts "²", which int() rejects


def _header_int(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if _DIGITS.fullmatch(value) and len(value) < 20 else None


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` from ``Content-Range: bytes START-END/TOTAL`` (or ``bytes */TOTAL``)."""
    match = re.fullmatch(
        r"bytes\s+(?:([0-9]{1,19})-[0-9]{1,19}|\*)/([0-9]{1,19}|\*)", (value or "").strip()
    )
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _validator(headers: Any) -> str | None:
    """A strong ``ETag``, else ``Last-Modified``: what ``If-Range`` may carry (RFC 9110 13.1.5)."""
    etag = (headers.get("ETag") or "").strip()
    if etag and not etag.startswith("W/"):
        return etag
    return (headers.get("Last-Modified") or "").strip() or None


def _resume_point(
    part: Path, size: int | None, checked: bool, confirming: bool
) -> tuple[int, str | None]:
    """``(offset, validator)``: where to resume ``part``, and the ``If-Range`` value to send.

    A ``.part`` whose origin cannot be vouched for (no validator, and no sha256 to check the
    result) is discarded, as is one longer than the expected size.
    """
    offset = _size(part)
    validator_file = _validator_path(part)
    validator = validator_file.read_text().strip() if validator_file.is_file() else None
    if offset and not validator and not checked and not confirming:
        _discard_part(part)  # no way to know the bytes belong to the server's current file
        offset = 0
    if size is not None and offset > size:
        _discard_part(part)
        offset = 0
    return offset, validator


def _request(source: str, part: Path, offset: int, validator: str | None, timeout: float) -> Any:
    """The response to a (range) request, or ``"complete"`` / ``"restart"`` after a 416."""
    host = urllib.parse.urlsplit(source).netloc
    req = urllib.request.Request(source, headers={"User-Agent": "gpt2lib"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
        if validator:
            req.add_header("If-Range", validator)
    proxy = _proxy_for(source)
    try:
        return _open(req, timeout)
    except urllib.error.HTTPError as e:
        total = _parse_content_range(e.headers.get("Content-Range"))[1] if e.headers else None
        e.close()
        if e.code == 416 and offset:
            if total == offset:
                return "complete"  # nothing after our bytes: the .part is the whole file
            _discard_part(part)  # the range starts past the end: start over
            return "restart"
        if e.code >= 500 or e.code in _TRANSIENT_STATUS:
            raise _TransientError(f"HTTP {e.code} {e.reason}") from e
        raise _FatalError(f"HTTP {e.code} {e.reason}", status=e.code) from e
    except urllib.error.URLError as e:
        raise _classify_url_error(e, host, proxy) from e
    except TimeoutError as e:
        raise _TransientError(f"no response from {host} within {timeout} s") from e
    except (ConnectionError, http.client.HTTPException, ssl.SSLError) as e:
        raise _TransientError(f"no response from {host}: {_describe(e)}") from e


def _body_start(
    resp: Any, part: Path, offset: int, size: int | None, confirming: bool
) -> tuple[int, int | None] | str:
    """``(offset the body starts at, total size or None)``, or ``"restart"``."""
    length = _header_int(resp.headers.get("Content-Length"))
    if resp.status == 206:
        start, total = _parse_content_range(resp.headers.get("Content-Range"))
        if start != offset:
            if not offset:
                raise _FatalError(f"unexpected partial response starting at byte {start}")
            _discard_part(part)
            return "restart"
        if total is None and length is not None:
            total = offset + length
    else:  # 200: the whole file (a new version, or a server that ignores ranges)
        if confirming:
            raise _FatalError(
                "the server stated no length and does not answer Range requests, so the "
                "download cannot be checked for completeness; pass size= or sha256="
            )
        offset, total = 0, length
        validator, validator_file = _validator(resp.headers), _validator_path(part)
        if validator:
            validator_file.write_text(validator)
        else:
            validator_file.unlink(missing_ok=True)
    if size is not None and total is not None and total != size:
        _discard_part(part)
        raise _FatalError(f"size mismatch: expected {size} bytes, the server has {total}")
    return offset, total


def _read_body(
    resp: Any, part: Path, offset: int, total: int | None, timeout: float, desc: str,
    progress: bool,
) -> int:  # fmt: skip
    """Append the body to ``part`` (from ``offset``); return the bytes received."""
    received = 0
    with open(part, "ab" if offset else "wb") as f, _progress(desc, total, offset, progress) as bar:
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
    return received


def _transfer_http(
    source: str, part: Path, size: int | None, timeout: float, desc: str, progress: bool,
    checked: bool, confirming: bool = False,
) -> str:  # fmt: skip
    """One attempt to complete ``part`` from ``source``, resuming it with a Range request.

    Returns ``"complete"`` when ``part`` holds the whole body, ``"restart"`` when the attempt
    should be repeated at once from byte zero, and ``"unconfirmed"`` when the body ended but its
    length was stated nowhere. ``checked``: a sha256 will check the result. ``confirming``: this
    request only asks whether anything follows the bytes we have. Raises
    :class:`_TransientError` for failures worth a retry and :class:`_FatalError` for final ones.
    """
    offset, validator = _resume_point(part, size, checked, confirming)
    if size is not None and offset == size and part.exists():
        return "complete"  # a complete .part from an earlier run; it is checked next
    resp = _request(source, part, offset, validator, timeout)
    if isinstance(resp, str):
        return resp
    with resp:
        start = _body_start(resp, part, offset, size, confirming)
        if isinstance(start, str):
            return start
        offset, total = start
        received = _read_body(resp, part, offset, total or size, timeout, desc, progress)
    if total is not None and offset + received != total:
        raise _TransientError(f"connection closed after {offset + received} of {total} bytes")
    if total is None and size is None and not checked:
        return "unconfirmed"
    return "complete"


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
    checked: bool,
) -> None:
    """Complete ``part`` from ``source``: at most ``1 + retries`` failed attempts, with backoff.

    Each retry resumes from what the earlier attempts wrote.
    """
    if urllib.parse.urlsplit(source).scheme == "file":
        _copy_file(source, part, desc, progress)
        return
    failures, confirming = 0, False
    while True:
        try:
            outcome = _transfer_http(
                source, part, size, timeout, desc, progress, checked, confirming
            )
        except _TransientError as e:
            failures += 1
            if failures > retries:
                tries = f"{failures} attempt{'s' if failures > 1 else ''}"
                raise _FatalError(f"giving up after {tries}; last error: {e}") from e
            time.sleep(min(MAX_BACKOFF, backoff * 2 ** (failures - 1)))
            continue
        if outcome == "complete":
            return
        confirming = outcome == "unconfirmed"  # ask for what follows; "restart": from zero


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
            _fill_part(
                source, part, size, timeout, retries, backoff, progress, dest.name,
                checked=sha256 is not None,
            )  # fmt: skip
            problem, digest = _problem(part, sha256, size)
            if problem is None:
                _record_path(dest).unlink(missing_ok=True)  # no record of the old file
                os.replace(part, dest)  # atomic: dest is complete or absent
                _validator_path(part).unlink(missing_ok=True)
                record = {"url": url, "size": dest.stat().st_size, "sha256": digest}
                atomic_write_text(_record_path(dest), json.dumps(record) + "\n")
                return dest
            _discard_part(part)
            if not stale:
                raise DownloadError(where, f"{problem}; the file was not kept")
            stale = False  # the old bytes may have been the bad ones: start afresh, once
    except _FatalError as e:
        raise DownloadError(where, str(e), e.status) from (e.__cause__ or e)
    except OSError as e:
        _discard_part(part)
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
    refresh: bool = False,
) -> Path:
    """Download ``url`` once into the cache (:func:`cache_path`) and return the cached path.

    A cached file is used when :func:`is_cached` vouches for it: the size recorded when it was
    downloaded, and ``sha256`` and ``size`` where given (the hash costs a read of the file). One
    that fails, or that nothing recorded, is deleted and fetched again; so is any cached file
    with ``refresh=True`` (e.g. after it failed to read). Keyword arguments are as for
    :func:`download`.
    """
    sha256 = _check_expected(sha256, size)
    dest = cache_path(url)
    with _locked(dest):
        if not refresh and is_cached(dest, sha256, size):
            return dest
        discard(dest)
        return _download(url, dest, sha256, size, timeout, retries, backoff, progress)
