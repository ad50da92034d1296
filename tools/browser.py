"""Headless Chromium for the page check, the widget tests and the widget benchmark.

:func:`serve` serves a built site on a loopback port (pages with live widgets need HTTP: a page
opened from ``file://`` may not fetch its models). :class:`Chromium` starts Debian's ``chromium``
and drives one tab through its DevTools protocol: navigate, evaluate JavaScript (awaiting
promises), screenshot; it records every URL the tab requests and every error it logs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".mjs": "text/javascript",
                      ".js": "text/javascript", ".onnx": "application/octet-stream"}  # fmt: skip

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """Serve ``site`` on 127.0.0.1 (a free port) for the block; yield its base URL."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def foreign_requests(urls: list[str]) -> list[str]:
    """The URLs of ``urls`` that leave the page's own host (a site read from ``file://`` or
    served on a loopback address is its own host)."""
    from urllib.parse import urlsplit

    local = {"file", "data", "blob", "about"}
    loopback = {"127.0.0.1", "localhost", "::1"}
    return sorted({u for u in urls if urlsplit(u).scheme not in local
                   and urlsplit(u).hostname not in loopback})  # fmt: skip


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless Chromium tab. Since the last navigation: ``requests``, the URLs asked for;
    ``received``, the bytes each brought over the wire; ``errors``, console errors, uncaught
    exceptions and failed loads."""

    def __init__(self, chromium: str | None = None) -> None:
        chromium = chromium or find_chromium()
        if chromium is None:
            raise RuntimeError("chromium not found (Debian: apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="gpt2-chromium-")
        # port 0: Chromium picks a free port and writes it to DevToolsActivePort in its profile,
        # so that two runs at once (the page check and the widget tests) never share a browser
        self.process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self._id = 0
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.received: dict[str, int] = {}  # URL -> bytes over the wire, since the navigation
        self._urls: dict[str, str] = {}  # DevTools request id -> URL
        self.ws = self.loop.run_until_complete(self._connect(self._page_target()))
        for domain in ("Network", "Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")
        self.call("Network.setCacheDisabled", cacheDisabled=True)  # every visit fetches anew

    def _page_target(self) -> str:
        active = Path(self.profile) / "DevToolsActivePort"
        for _ in range(150):
            if self.process.poll() is not None:
                break
            try:
                port = int(active.read_text().split()[0])
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as r:
                    targets = json.load(r)
                return next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
            except (OSError, StopIteration, ValueError, IndexError):
                time.sleep(0.2)
        raise RuntimeError("headless Chromium did not start")

    async def _connect(self, url: str) -> Any:
        from tornado.websocket import websocket_connect

        return await websocket_connect(url, max_message_size=512 * 2**20)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
            self._urls[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFinished" and params["requestId"] in self._urls:
            url = self._urls[params["requestId"]]
            self.received[url] = self.received.get(url, 0) + int(params["encodedDataLength"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry']['text']} ({params['entry'].get('url', '')})")

    async def _call(self, method: str, timeout: float, params: dict[str, Any]) -> dict[str, Any]:
        self._id += 1
        self.ws.write_message(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(self.ws.read_message(), timeout=max(deadline - time.monotonic(), 0.1))
            if raw is None:
                raise RuntimeError(f"headless Chromium closed the DevTools connection during {method}")
            message = json.loads(raw)
            if "method" in message:
                self._event(message)
            elif message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def call(self, method: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events meanwhile are recorded)."""
        return self.loop.run_until_complete(self._call(method, timeout, params))

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """The value of a JavaScript expression (a promise is awaited); raises on an exception."""
        result = self.call("Runtime.evaluate", timeout, expression=expression, awaitPromise=True,
                           returnByValue=True)  # fmt: skip
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details["text"])
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Evaluate ``expression`` every 0.2 s until it is truthy; return that value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"still false after {timeout:.0f} s: {expression}")

    def resize(self, width: int, height: int = 900) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=width < 600)  # fmt: skip

    def navigate(self, url: str, timeout: float = 60.0, settle: bool = True) -> None:
        """Open ``url`` and (with ``settle``) wait until it has loaded and its size stopped
        changing for 1.5 s."""
        self.evaluate("window.gpt2OldPage = true")  # a mark on the document shown now
        self.requests, self.errors, self.received = [], [], {}
        self.call("Page.navigate", url=url)
        if settle:
            self.settle(timeout, url)

    def settle(self, timeout: float = 60.0, what: str = "the page") -> None:
        """Wait until the page has loaded and its size stopped changing for 1.5 s."""
        state = ("[window.gpt2OldPage === undefined && document.readyState === 'complete',"
                 " document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        last, stable, deadline = None, 0, time.monotonic() + timeout
        while stable < 3:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not finish loading and laying out in {timeout:.0f} s")
            time.sleep(0.5)
            now = self.evaluate(state)
            stable = stable + 1 if now[0] and now == last else 0
            last = now

    def screenshot(self, out: Path, width: int) -> None:
        """A PNG of the whole page at ``width`` px."""
        height = self.evaluate("document.documentElement.scrollHeight")
        self.resize(width, height)
        time.sleep(1)
        shot = self.call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))
        self.resize(width)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.loop.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
