"""Uppy (the npm package's bundle: Dashboard + Tus plugin) in headless Chromium.

The page comes from a second origin, so every tus request is cross-origin (CORS). Files are
chosen through the Dashboard's own file input and the upload starts from its Upload button; the
bytes the server stores are checked by SHA-256. Pausing keeps the server's bytes and resuming
sends only the rest; a page reloaded in the middle of an upload finds the upload again (Uppy's
Tus plugin stores its URL in localStorage) and continues from the server's offset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Page, Request
from prometheus_client.parser import text_string_to_metric_families

from tests.support.browser import serve_uppy_page, throttle_uploads, wait_for
from tests.support.source_files import MakeFile, SourceFile
from tests.support.tus_requests import download_sha256, stable_offset, wait_until
from tests.support.tusd_process import StartTusd, TusdProcess

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
PAGE = Path(__file__).parent / "pages" / "uppy.html"
FILE_INPUT = ".uppy-Dashboard-input[name='files[]']"
UPLOAD_BUTTON = ".uppy-StatusBar-actionBtn--upload"


@pytest.fixture
def uppy_origin() -> Iterator[str]:
    """The Uppy page and bundle, served from an origin other than the tus server's."""
    with serve_uppy_page(PAGE) as origin:
        yield origin


@pytest.fixture
def server(tusd_factory: StartTusd, uppy_origin: str) -> TusdProcess:
    server = tusd_factory("--cors-origins", uppy_origin)
    assert not server.endpoint.startswith(uppy_origin)
    return server


def open_uppy(page: Page, origin: str, server: TusdProcess, **options: int) -> None:
    page.goto(f"{origin}/?" + urlencode({"endpoint": server.endpoint, **options}))
    wait_for(page, "document.body.dataset.ready === 'yes'")


def choose_and_upload(page: Page, *sources: SourceFile) -> None:
    """What a person does: choose files in the Dashboard, then press its Upload button."""
    page.set_input_files(FILE_INPUT, [source.path for source in sources])
    wait_for(page, f"uppy.getFiles().length === {len(sources)}")
    page.click(UPLOAD_BUTTON)


def upload_result(page: Page, timeout: float = 120.0) -> dict[str, Any]:
    """The `complete` event's successful and failed files, once Uppy is done."""
    result: dict[str, Any] = json.loads(wait_for(page, "document.body.dataset.complete", timeout))
    return result


def created_uploads(server: TusdProcess) -> list[str]:
    """The ids of every upload the server created (the file store writes one `.info` each)."""
    return sorted(path.name.removesuffix(".info") for path in server.upload_dir.glob("*.info"))


def the_only_upload(server: TusdProcess) -> str:
    """The URL of the single upload the server has, waiting for the POST to arrive."""
    assert wait_until(lambda: len(created_uploads(server)) > 0, 30), "no upload was created"
    ids = created_uploads(server)
    assert len(ids) == 1, ids
    return server.endpoint + ids[0]


def wait_for_chunks(server: TusdProcess, url: str, chunks: int) -> None:
    """Until the server has answered `chunks` PATCHes of the upload; read from its access log, so
    that the test sends the server nothing while the browser uploads."""
    path = "/files/" + url.rsplit("/", 1)[1]
    done = lambda: len(access_log(server, "PATCH", path, status=204)) >= chunks  # noqa: E731
    assert wait_until(done, 60), access_log(server, "PATCH", path)


def bytes_received(server: TusdProcess) -> float:
    metrics = httpx.get(server.endpoint.removesuffix("/files/") + "/metrics", timeout=10).text
    return next(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "tusd_bytes_received_total"
    )


def access_log(server: TusdProcess, method: str, path: str, status: int | None = None) -> list[str]:
    """The server's access-log lines for `method` on `path`, answered with `status` if given."""
    answer = str(status) if status else r"\d+"
    pattern = re.compile(rf"tusd_py\.access: {method} {re.escape(path)} {answer} ")
    return [line for line in list(server.lines) if pattern.search(line)]


def test_dashboard_uploads_a_large_and_a_small_file(
    server: TusdProcess, make_file: MakeFile, page: Page, uppy_origin: str
) -> None:
    large, small = make_file(30 * MiB), make_file(1234)
    open_uppy(page, uppy_origin, server)
    choose_and_upload(page, large, small)
    result = upload_result(page)
    page.screenshot(path=ARTIFACTS / "uppy-done.png")

    assert result["failed"] == [], result
    urls = {file["name"]: file["url"] for file in result["successful"]}
    assert set(urls) == {large.path.name, small.path.name}, result
    for source in (large, small):
        url = urls[source.path.name]
        assert url.startswith(server.endpoint), url
        assert download_sha256(url) == (source.size, source.sha256)
    assert len(created_uploads(server)) == 2


def test_pause_and_resume(
    server: TusdProcess, make_file: MakeFile, page: Page, uppy_origin: str
) -> None:
    source = make_file(30 * MiB)
    open_uppy(page, uppy_origin, server, chunkSize=MiB)
    throttle_uploads(page, 4 * MiB)  # about 8 s for the file: time to pause in the middle
    choose_and_upload(page, source)
    url = the_only_upload(server)
    wait_for_chunks(server, url, 2)

    assert page.evaluate("uppy.pauseResume(uppy.getFiles()[0].id)") is True
    assert page.evaluate("uppy.getFiles()[0].isPaused") is True
    # The server kept what arrived before the pause, and nothing more arrives while paused.
    kept = stable_offset(url)
    assert 0 < kept < source.size, kept
    page.screenshot(path=ARTIFACTS / "uppy-paused.png")

    assert page.evaluate("uppy.pauseResume(uppy.getFiles()[0].id)") is False
    result = upload_result(page)
    assert result["failed"] == [], result
    assert [file["url"] for file in result["successful"]] == [url]
    assert download_sha256(url) == (source.size, source.sha256)
    # Resuming sent only the missing bytes, to the same upload.
    assert bytes_received(server) == source.size
    assert created_uploads(server) == [url.rsplit("/", 1)[1]]


def test_reload_in_the_middle_resumes_from_the_server_offset(
    server: TusdProcess, make_file: MakeFile, page: Page, uppy_origin: str
) -> None:
    source = make_file(12 * MiB)
    open_uppy(page, uppy_origin, server, chunkSize=MiB)
    throttle_uploads(page, 2 * MiB)
    choose_and_upload(page, source)
    url = the_only_upload(server)
    upload_path = "/files/" + url.rsplit("/", 1)[1]
    wait_for_chunks(server, url, 3)

    page.reload()
    kept = stable_offset(url)
    assert 0 < kept < source.size, kept
    stored = page.evaluate("Object.keys(localStorage).filter((key) => key.startsWith('tus::'))")
    assert len(stored) == 1, stored  # the upload URL, kept for resuming
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    heads_before = len(access_log(server, "HEAD", upload_path))  # the test's own, so far

    wait_for(page, "document.body.dataset.ready === 'yes'")
    choose_and_upload(page, source)  # the same file again: Uppy finds the upload it started
    result = upload_result(page)
    assert result["failed"] == [], result
    assert [file["url"] for file in result["successful"]] == [url]
    assert download_sha256(url) == (source.size, source.sha256)

    tus_requests = [(r.method, r.url) for r in sent if r.url.startswith(server.endpoint)]
    assert ("POST", server.endpoint) not in tus_requests, tus_requests
    assert tus_requests[0] == ("HEAD", url), tus_requests
    patches = [r for r in sent if r.method == "PATCH"]
    assert patches and patches[0].url == url
    assert patches[0].headers["upload-offset"] == str(kept)  # not 0: from the server's offset
    # The server saw one upload created, and one HEAD that found it again after the reload.
    assert len(access_log(server, "POST", "/files/")) == 1
    assert created_uploads(server) == [url.rsplit("/", 1)[1]]
    heads_after = access_log(server, "HEAD", upload_path)[heads_before:]
    assert len(heads_after) == 1 and f"HEAD {upload_path} 200 " in heads_after[0], heads_after
