"""Real browsers: headless Chromium uploads through the demo page and through tus-js-client.

Files are chosen the way a person chooses them (DOM.setFileInputFiles on the file input) and
buttons are clicked with mouse events. The bytes the server stores are checked by SHA-256, and
screenshots land in test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.browser import Chromium, Page
from tests.support.source_files import MakeFile
from tests.support.tus_requests import TUS, download_sha256, stable_offset
from tests.support.tusd_process import StartTusd

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
PAGES = Path(__file__).parent / "pages"
TUS_JS_BROWSER_BUILD = Path(__file__).parent / "js/node_modules/tus-js-client/dist/tus.min.js"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    browser = Chromium()
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def page(chromium: Chromium) -> Iterator[Page]:
    tab = chromium.new_page()
    try:
        yield tab
    finally:
        print("--- browser console\n" + "\n".join(tab.console))
        tab.close()


def test_demo_page_upload_with_pause_and_resume(
    tusd_factory: StartTusd, make_file: MakeFile, page: Page
) -> None:
    server = tusd_factory("--demo")
    origin = server.endpoint.removesuffix("/files/")
    source = make_file(4 * 1024 * 1024)
    # Slow enough to pause in the middle of the single PATCH that carries the whole file.
    page.throttle_uploads(1024 * 1024)
    page.navigate(origin + "/")
    assert page.evaluate("document.title").startswith("tusd-py")

    page.set_files("#files", source.path)
    row = ".upload"
    page.wait_for(f"Number(document.querySelector('{row}')?.dataset.offset) > 512 * 1024", 30)
    page.click(f"{row} button.toggle")
    assert page.wait_for(f"document.querySelector('{row}').dataset.state") == "paused"
    assert page.evaluate(f"document.querySelector('{row} button.toggle').textContent") == "Resume"
    url = page.evaluate(f"document.querySelector('{row}').dataset.url")

    # The server kept what arrived before the pause, and nothing more arrives while paused.
    kept = stable_offset(url)
    assert 0 < kept < source.size, kept
    page.screenshot(ARTIFACTS / "demo-paused.png")

    page.click(f"{row} button.toggle")
    page.wait_for(f"document.querySelector('{row}').dataset.state === 'done'", 60)
    link = page.evaluate(f"document.querySelector('{row} a.download').href")
    assert link == url
    status = page.evaluate(f"document.querySelector('{row} .status').textContent")
    assert status.startswith("done"), status
    page.screenshot(ARTIFACTS / "demo-done.png")

    assert download_sha256(link) == (source.size, source.sha256)
    head = httpx.head(url, headers=TUS, timeout=10)
    assert head.headers["Upload-Offset"] == str(source.size)
    # Resuming sent only the missing bytes: the server received the file exactly once.
    metrics = httpx.get(origin + "/metrics", timeout=10).text
    received = next(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "tusd_bytes_received_total"
    )
    assert received == source.size


class _PageServer(BaseHTTPRequestHandler):
    """Serves the test page and tus-js-client's browser build from a second origin."""

    files = {
        "/": (PAGES / "tus-js-client.html", "text/html; charset=utf-8"),
        "/tus.min.js": (TUS_JS_BROWSER_BUILD, "text/javascript"),
    }

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in self.files:
            self.send_error(404)
            return
        file, media_type = self.files[path]
        body = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def page_origin() -> Iterator[str]:
    assert TUS_JS_BROWSER_BUILD.exists(), "run scripts/test: it installs tests/e2e/js (npm ci)"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PageServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("chunk_size", [None, 256 * 1024], ids=["one-patch", "chunked"])
def test_tus_js_client_browser_build_from_another_origin(
    tusd_factory: StartTusd,
    make_file: MakeFile,
    page: Page,
    page_origin: str,
    chunk_size: int | None,
) -> None:
    server = tusd_factory("--cors-origins", page_origin)
    assert not server.endpoint.startswith(page_origin)
    source = make_file(1024 * 1024 + 17)
    query = f"?endpoint={server.endpoint}" + (f"&chunkSize={chunk_size}" if chunk_size else "")
    page.navigate(page_origin + "/" + query)
    page.set_files("#file", source.path)
    state = page.wait_for(
        "['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state",
        60,
    )
    detail = page.evaluate("document.getElementById('detail').textContent")
    assert state == "done", detail
    page.screenshot(
        ARTIFACTS / f"tus-js-client-cors-{'chunked' if chunk_size else 'one-patch'}.png"
    )

    url = page.evaluate("document.body.dataset.url")
    assert url.startswith(server.endpoint)
    # Upload-Offset and X-Request-ID were readable from the page: CORS exposes them.
    assert page.evaluate("document.body.dataset.offset") == str(source.size)
    assert page.evaluate("document.body.dataset.requestId")
    assert download_sha256(url) == (source.size, source.sha256)
