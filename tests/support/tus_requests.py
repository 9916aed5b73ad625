"""tus requests to a real server over httpx: HEAD, download and digest, wait for an offset,
and the check that a finished upload reads back whole."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Mapping

import httpx

from tests.support.source_files import SourceFile
from tests.support.tusd_process import TusdProcess

TUS = {"Tus-Resumable": "1.0.0"}


def upload_whole(endpoint: str, data: bytes, timeout: float = 60) -> str:
    """Create an upload of `data` and send it in one PATCH; its URL."""
    created = httpx.post(endpoint, headers={**TUS, "Upload-Length": str(len(data))}, timeout=30)
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    patched = httpx.patch(
        url,
        content=data,
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        timeout=timeout,
    )
    assert patched.status_code == 204, patched.text
    return url


def head(url: str) -> httpx.Response:
    return httpx.head(url, headers=TUS, timeout=30)


def download_sha256(url: str) -> tuple[int, str]:
    """GET the upload and return (number of bytes, SHA-256 hex digest) of the body."""
    digest = hashlib.sha256()
    size = 0
    with httpx.stream("GET", url, headers=TUS, timeout=60) as response:
        assert response.status_code == 200, (
            f"GET {url} answered {response.status_code} {dict(response.headers)}: "
            f"{response.read()[:500]!r}"
        )
        for chunk in response.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def assert_stored(
    server: TusdProcess, url: str, source: SourceFile, metadata: Mapping[str, str]
) -> None:
    """The upload at `url` is complete, has `metadata`, and downloads as `source`."""
    assert url.startswith(server.endpoint), f"upload URL {url} is not under {server.endpoint}"
    response = head(url)
    assert response.status_code in (200, 204), f"HEAD {url}: {response.status_code}"
    assert response.headers["Upload-Offset"] == str(source.size)
    assert response.headers["Upload-Length"] == str(source.size)
    pairs = [pair.split(" ", 1) for pair in response.headers["Upload-Metadata"].split(",")]
    stored = {key: base64.b64decode(value[0]).decode() if value else "" for key, *value in pairs}
    assert stored == metadata
    assert download_sha256(url) == (source.size, source.sha256)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def stable_offset(url: str, timeout: float = 10.0, settle: float = 0.5) -> int:
    """HEAD until the upload answers and its offset stays the same for `settle` seconds.

    Right after a client hangs up, the server may still be writing the bytes it received, or
    still hold the upload's lock (423); both are fine for a moment.
    """
    deadline = time.monotonic() + timeout
    last: int | None = None
    since = time.monotonic()
    answers: list[str] = []
    while time.monotonic() < deadline:
        response = head(url)
        answers.append(f"{response.status_code} {response.headers.get('Upload-Offset')}")
        if response.status_code in (200, 204) and "Upload-Offset" in response.headers:
            offset = int(response.headers["Upload-Offset"])
            if offset != last:
                last, since = offset, time.monotonic()
            elif time.monotonic() - since >= settle:
                return offset
        time.sleep(0.1)
    raise AssertionError(f"HEAD {url} gave no stable offset within {timeout}s: {answers[-10:]}")
