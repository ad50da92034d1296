"""A client for Ollama (https://ollama.com), the local server that runs Llama 3 for chapter 7.

:func:`probe_ollama` tells whether an ``ollama`` process runs here and whether a server answers
(``/api/version``); :class:`OllamaChat` sends one chat message to a model on the server
(``/api/chat`` through the ``ollama`` package) with deterministic options, and raises
:class:`OllamaUnavailableError`, naming the server, the model and the fix, when it cannot.
The host comes from the argument, else ``$OLLAMA_HOST``, else ``localhost:11434``, as in
Ollama's own tools; a loopback server is reached without the environment's proxy.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from .download import is_loopback

DEFAULT_HOST = "http://localhost:11434"
DEFAULT_PORT = 11434


class OllamaUnavailableError(RuntimeError):
    """The Ollama server (or the model on it) could not be used."""


@dataclass(frozen=True)
class OllamaStatus:
    """The answer of :func:`probe_ollama`."""

    host: str
    process_found: bool
    server_reachable: bool
    version: str | None = None

    def __str__(self) -> str:
        process = "found" if self.process_found else "not found"
        if self.server_reachable:
            server = f"answers (version {self.version or 'unknown'})"
        else:
            server = "does not answer"
        return f"ollama process: {process}; server at {self.host}: {server}"


def ollama_host(host: str | None = None) -> str:
    """The server's base URL from ``host``, else ``$OLLAMA_HOST``, else ``DEFAULT_HOST``.

    Like Ollama itself, a bare ``host`` or ``host:port`` means ``http://`` and port 11434;
    ``http://host`` / ``https://host`` without a port mean 80 / 443.
    """
    raw = (host if host is not None else os.environ.get("OLLAMA_HOST", "")).strip()
    if not raw:
        raw = DEFAULT_HOST
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest, default_port = "http", raw, DEFAULT_PORT
    elif scheme in ("http", "https"):
        default_port = 80 if scheme == "http" else 443
    else:
        raise ValueError(f"Ollama host {raw!r} must use http:// or https://")
    parts = urllib.parse.urlsplit(f"{scheme}://{rest}")
    try:
        port = parts.port or default_port
    except ValueError as err:
        raise ValueError(f"Ollama host {raw!r} has an invalid port") from err
    name = parts.hostname or "127.0.0.1"
    if ":" in name:  # IPv6 literal
        name = f"[{name}]"
    return f"{scheme}://{name}:{port}{parts.path.rstrip('/')}"


def find_ollama_process() -> bool:
    """Whether a process named ``ollama`` (or ``Ollama``, ``ollama.exe``, ...) runs here.

    Processes that vanish or deny access while listed are skipped; if the process table cannot
    be read at all (some sandboxes), the answer is ``False``. A server in another container or
    machine is not a local process: :func:`probe_ollama` asks the server itself as well.
    """
    import psutil

    try:
        for proc in psutil.process_iter(["name"]):
            name = (proc.info.get("name") or "").lower()
            if name.startswith("ollama"):
                return True
    except (psutil.Error, OSError):
        return False
    return False


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    handlers = [urllib.request.ProxyHandler({})] if is_loopback(url) else []
    opener = urllib.request.build_opener(*handlers)
    with opener.open(url, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8") or "{}")


def probe_ollama(host: str | None = None, timeout: float = 1.0) -> OllamaStatus:
    """Look for an ``ollama`` process and ask the server for ``/api/version`` (then ``/api/tags``).

    Never raises for an absent server; the result says what was found.
    """
    base = ollama_host(host)
    reachable, version = False, None
    for endpoint in ("/api/version", "/api/tags"):
        try:
            reply = _get_json(base + endpoint, timeout)
        except (OSError, ValueError):  # URLError, refused, timeout, bad JSON
            continue
        reachable = True
        version = reply.get("version") if isinstance(reply, dict) else None
        break
    return OllamaStatus(base, find_ollama_process(), reachable, version)


def ollama_running(host: str | None = None, timeout: float = 1.0) -> bool:
    """Whether an Ollama server answers at ``host`` (default ``$OLLAMA_HOST`` or localhost)."""
    return probe_ollama(host, timeout).server_reachable


def _unavailable(host: str, model: str, problem: str) -> OllamaUnavailableError:
    return OllamaUnavailableError(
        f"Ollama unavailable: {problem} (server {host}, model {model!r}). Start the server "
        f"with `ollama serve` (or the Ollama app), fetch the model with `ollama pull {model}`, "
        "and set OLLAMA_HOST if it listens elsewhere; see https://ollama.com/download."
    )


class OllamaChat:
    """One model on an Ollama server: :meth:`chat` sends a user message, returns the reply.

    ``options`` are deterministic by default (``seed``, ``temperature`` 0, a ``num_ctx``
    context window). Connection errors, timeouts, server errors and unreadable replies raise
    :class:`OllamaUnavailableError`.
    """

    def __init__(
        self,
        model: str = "llama3",
        host: str | None = None,
        timeout: float = 120.0,
        *,
        seed: int = 123,
        temperature: float = 0.0,
        num_ctx: int = 2048,
        stream: bool = False,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty model name, got {model!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.model, self.host, self.timeout, self.stream = model, ollama_host(host), timeout, stream
        self.options = {"seed": seed, "temperature": temperature, "num_ctx": num_ctx}
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            import ollama

            extra = {"trust_env": False} if is_loopback(self.host) else {}
            self._client = ollama.Client(host=self.host, timeout=self.timeout, **extra)
        return self._client

    def chat(self, prompt: str) -> str:
        """Send one user message; return the reply's text (joined, if streamed)."""
        import httpx
        import ollama

        messages = [{"role": "user", "content": prompt}]
        try:
            client = self._get_client()
            if self.stream:
                chunks = client.chat(self.model, messages, stream=True, options=self.options)
                return "".join(chunk.message.content or "" for chunk in chunks)
            response = client.chat(self.model, messages, stream=False, options=self.options)
            return response.message.content or ""
        except httpx.TimeoutException as err:
            raise _unavailable(self.host, self.model, f"no reply within {self.timeout} s") from err
        except (ConnectionError, httpx.TransportError) as err:
            raise _unavailable(self.host, self.model, "cannot connect") from err
        except ollama.ResponseError as err:
            problem = f"server error {err.status_code}: {err.error}"
            raise _unavailable(self.host, self.model, problem) from err
        except (ValueError, TypeError) as err:  # not Ollama's JSON (bad JSON, a list, ...)
            problem = f"unreadable reply: {str(err)[:200]}"
            raise _unavailable(self.host, self.model, problem) from err
