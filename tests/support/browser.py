"""Headless Chromium for the browser tests: Debian's chromium driven by Playwright.

Playwright's own browser download (`playwright install`) is never used: `launch_chromium` starts
the system's /usr/bin/chromium through `executable_path`. `record_console` keeps what a page
logged, so a failing test can show it; `wait_for` polls a page until an expression holds;
`throttle_uploads` slows the page's request bodies down (DevTools network emulation) so a test
can act in the middle of an upload; `serve_files` serves pages from a second origin, so that the
tus server is reached cross-origin (CORS).
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, CDPSession, Page, Playwright

# As root in a sandbox-less container, with no network beyond loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
]


def chromium_binary() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    raise RuntimeError("chromium is not installed; scripts/test installs it (apt-get chromium)")


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(
        executable_path=chromium_binary(), headless=True, args=CHROMIUM_ARGS
    )


def record_console(page: Page) -> list[str]:
    """The page's console messages and uncaught errors, as they happen."""
    lines: list[str] = []
    page.on("console", lambda message: lines.append(f"console.{message.type}: {message.text}"))
    page.on("pageerror", lambda error: lines.append(f"page error: {error}"))
    return lines


def wait_for(page: Page, expression: str, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Evaluate `expression` in the page until it is truthy; returns its value.

    A poll from here rather than Playwright's wait_for_function, which evaluates the string with
    eval() in the page, and a page whose Content-Security-Policy forbids eval (the demo) says no.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression!r} still falsy after {timeout}s")
        time.sleep(interval)


def throttle_uploads(page: Page, bytes_per_second: int) -> CDPSession:
    """Limit what the page sends to `bytes_per_second` (-1: no limit) until the session ends."""
    session = page.context.new_cdp_session(page)
    session.send("Network.enable")
    session.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": bytes_per_second,
        },
    )
    return session


UPPY_DIST = Path(__file__).resolve().parents[1] / "e2e/js/node_modules/uppy/dist"


@contextlib.contextmanager
def serve_uppy_page(page: Path) -> Iterator[str]:
    """An Uppy test page and the Uppy bundle, served from an origin of their own (another
    origin than the tus server's, as on a real site); yields that origin."""
    assert (UPPY_DIST / "uppy.min.mjs").exists(), "run scripts/test: it installs tests/e2e/js"
    files = {
        "/": page,
        "/uppy.min.mjs": UPPY_DIST / "uppy.min.mjs",
        "/uppy.min.css": UPPY_DIST / "uppy.min.css",
    }
    with serve_files(files) as origin:
        yield origin


@contextlib.contextmanager
def serve_files(files: Mapping[str, Path]) -> Iterator[str]:
    """Serve `files` (URL path → file) on a free port; yields the origin, http://127.0.0.1:PORT."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path not in files:
                self.send_error(404)
                return
            file = files[path]
            body = file.read_bytes()
            media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            if media_type.startswith("text/"):
                media_type += "; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
