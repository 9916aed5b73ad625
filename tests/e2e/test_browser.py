"""Real browsers: headless Chromium uploads through the demo page and through tus-js-client.

Files are chosen the way a person chooses them (Playwright's set_input_files on the file input)
and buttons are clicked with mouse events. The bytes the server stores are checked by SHA-256, and
screenshots land in test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page
from prometheus_client.parser import text_string_to_metric_families

from tests.support.browser import serve_files, throttle_uploads, wait_for
from tests.support.source_files import MakeFile
from tests.support.tus_requests import TUS, download_sha256, stable_offset
from tests.support.tusd_process import StartTusd

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
PAGES = Path(__file__).parent / "pages"
TUS_JS_BROWSER_BUILD = Path(__file__).parent / "js/node_modules/tus-js-client/dist/tus.min.js"


def test_demo_page_upload_with_pause_and_resume(
    tusd_factory: StartTusd, make_file: MakeFile, page: Page
) -> None:
    server = tusd_factory("--demo")
    origin = server.endpoint.removesuffix("/files/")
    deadline = time.monotonic() + 5  # printed right after the line TusdProcess waits for
    while f"tusd-py demo page at {origin}/" not in server.output:
        assert time.monotonic() < deadline, server.output
        time.sleep(0.05)
    source = make_file(4 * 1024 * 1024)
    page.goto(origin + "/")
    # Slow enough to pause in the middle of the single PATCH that carries the whole file. (Set
    # after the navigation: a new origin gets a new renderer, and the limit would not follow.)
    throttle_uploads(page, 1024 * 1024)
    assert page.evaluate("document.title").startswith("tusd-py")

    page.set_input_files("#files", source.path)
    row = ".upload"
    wait_for(page, f"Number(document.querySelector('{row}')?.dataset.offset) > 512 * 1024", 30)
    page.click(f"{row} button.toggle")
    assert wait_for(page, f"document.querySelector('{row}').dataset.state") == "paused"
    assert page.evaluate(f"document.querySelector('{row} button.toggle').textContent") == "Resume"
    url = page.evaluate(f"document.querySelector('{row}').dataset.url")

    # The server kept what arrived before the pause, and nothing more arrives while paused.
    kept = stable_offset(url)
    assert 0 < kept < source.size, kept
    page.screenshot(path=ARTIFACTS / "demo-paused.png")

    page.click(f"{row} button.toggle")
    wait_for(page, f"document.querySelector('{row}').dataset.state === 'done'", 60)
    link = page.evaluate(f"document.querySelector('{row} a.download').href")
    assert link == url
    status = page.evaluate(f"document.querySelector('{row} .status').textContent")
    assert status.startswith("done"), status
    page.screenshot(path=ARTIFACTS / "demo-done.png")

    assert download_sha256(link) == (source.size, source.sha256)
    head = httpx.head(url, headers=TUS, timeout=10)
    assert head.headers["Upload-Offset"] == str(source.size)
    # Resuming sent only the missing bytes: the server received the file exactly once.
    assert metric(origin, "tusd_bytes_received_total") == source.size


def metric(origin: str, name: str) -> float:
    text = httpx.get(origin + "/metrics", timeout=10).text
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def start_demo_upload(page: Page, origin: str, path: Path, bytes_per_second: int, past: int) -> str:
    """Choose `path` on the demo page at `origin`, uploading at `bytes_per_second`; returns the
    upload's URL once the page has sent more than `past` bytes."""
    page.goto(origin + "/")
    throttle_uploads(page, bytes_per_second)
    page.set_input_files("#files", path)
    wait_for(page, f"Number(document.querySelector('.upload')?.dataset.offset) > {past}", 30)
    url: str = page.evaluate("document.querySelector('.upload').dataset.url")
    return url


def test_demo_page_resumes_after_a_reload(
    tusd_factory: StartTusd, make_file: MakeFile, page: Page
) -> None:
    server = tusd_factory("--demo")
    origin = server.endpoint.removesuffix("/files/")
    source = make_file(6 * 1024 * 1024)
    url = start_demo_upload(page, origin, source.path, 1024 * 1024, 1024 * 1024)
    row = ".upload"
    page.reload()
    kept = stable_offset(url)  # what the interrupted PATCH committed
    assert 0 < kept < source.size, kept
    throttle_uploads(page, -1)

    # The same file, chosen again on the new page: its upload goes on where the server is.
    page.set_input_files("#files", source.path)
    assert page.evaluate(f"document.querySelector('{row}').dataset.resumed") == "true"
    wait_for(page, f"document.querySelector('{row}').dataset.state === 'done'", 60)
    assert page.evaluate(f"document.querySelector('{row}').dataset.url") == url
    assert download_sha256(url) == (source.size, source.sha256)
    assert metric(origin, "tusd_uploads_created_total") == 1
    assert metric(origin, "tusd_bytes_received_total") == source.size, "nothing was sent twice"
    # Finished: the page forgets it, so the same file chosen again is a new upload.
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('tusd-py::'))") == []
    page.screenshot(path=ARTIFACTS / "demo-resumed.png")


def test_demo_page_cancel_removes_the_upload(
    tusd_factory: StartTusd, make_file: MakeFile, page: Page
) -> None:
    server = tusd_factory("--demo")
    origin = server.endpoint.removesuffix("/files/")
    source = make_file(4 * 1024 * 1024)
    url = start_demo_upload(page, origin, source.path, 512 * 1024, 256 * 1024)
    row = ".upload"
    page.click(f"{row} button.cancel")
    status = wait_for(
        page,
        f"document.querySelector('{row}').dataset.state === 'cancelled' && "
        f"!document.querySelector('{row} .status').textContent.endsWith('…') && "
        f"document.querySelector('{row} .status').textContent",
    )
    assert status.startswith("cancelled: the server removed"), status
    assert page.evaluate(f"document.querySelectorAll('{row} button').length") == 0
    assert httpx.head(url, headers=TUS, timeout=10).status_code in (404, 410)


def test_demo_page_offers_no_retry_for_a_refused_upload(
    tusd_factory: StartTusd, make_file: MakeFile, page: Page
) -> None:
    server = tusd_factory("--demo", "--max-size", "1024")
    origin = server.endpoint.removesuffix("/files/")
    page.goto(origin + "/")
    page.set_input_files("#files", make_file(4096).path)
    row = ".upload"
    state = wait_for(
        page,
        f"document.querySelector('{row}')?.dataset.state !== 'uploading' && "
        f"document.querySelector('{row}').dataset.state",
    )
    assert state == "failed"
    status = page.evaluate(f"document.querySelector('{row} .status').textContent")
    assert status.startswith("the server refused this upload:") and "1024" in status, status
    assert page.evaluate(f"document.querySelector('{row} button.toggle')") is None
    # The page has its icon (no 404 in the console for /favicon.ico).
    icon = page.evaluate("document.querySelector('link[rel=icon]').href")
    assert httpx.get(icon, timeout=10).status_code == 200


@pytest.fixture
def page_origin() -> Iterator[str]:
    """The test page and tus-js-client's browser build, served from a second origin."""
    assert TUS_JS_BROWSER_BUILD.exists(), "run scripts/test: it installs tests/e2e/js (npm ci)"
    with serve_files(
        {"/": PAGES / "tus-js-client.html", "/tus.min.js": TUS_JS_BROWSER_BUILD}
    ) as origin:
        yield origin


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
    page.goto(page_origin + "/" + query)
    page.set_input_files("#file", source.path)
    state = wait_for(
        page,
        "['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state",
        60,
    )
    detail = page.evaluate("document.getElementById('detail').textContent")
    assert state == "done", detail
    page.screenshot(
        path=ARTIFACTS / f"tus-js-client-cors-{'chunked' if chunk_size else 'one-patch'}.png"
    )

    url = page.evaluate("document.body.dataset.url")
    assert url.startswith(server.endpoint)
    # Upload-Offset and X-Request-ID were readable from the page: CORS exposes them.
    assert page.evaluate("document.body.dataset.offset") == str(source.size)
    assert page.evaluate("document.body.dataset.requestId")
    assert download_sha256(url) == (source.size, source.sha256)
