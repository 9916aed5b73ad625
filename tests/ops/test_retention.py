"""--retain-finished in the server process: finished uploads, empty ones too, go once the
retention is past and not before; unfinished ones stay (issue 14, finding 15)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import RedisServer, unique_prefix
from tests.support.tus_requests import wait_until
from tests.support.tusd_process import TusdProcess

TUS = {"Tus-Resumable": "1.0.0"}
RETAIN = 2.0


def created(http: httpx.Client, endpoint: str, length: int, data: bytes = b"") -> str:
    response = http.post(endpoint, headers={**TUS, "Upload-Length": str(length)})
    assert response.status_code == 201, response.text
    url = response.headers["Location"]
    if data:
        headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        assert http.patch(url, headers=headers, content=data).status_code == 204
    return url


@pytest.mark.parametrize("state", ["local", "redis"])
def test_finished_uploads_go_once_the_retention_is_past(
    tmp_path: Path, state: str, request: pytest.FixtureRequest
) -> None:
    flags = ["--retain-finished", f"{RETAIN}s", "--expiration-sweep-interval", "200ms"]
    if state == "redis":
        redis: RedisServer = request.getfixturevalue("redis")
        flags += ["--redis-url", redis.url, "--redis-prefix", unique_prefix()]
    upload_dir = tmp_path / "uploads"
    server = TusdProcess(upload_dir, tuple(flags))
    try:
        with httpx.Client(timeout=10) as http:
            finished = created(http, server.endpoint, 5, b"hello")
            empty = created(http, server.endpoint, 0)
            finished_at = time.monotonic()
            unfinished = created(http, server.endpoint, 10, b"abc")

            time.sleep(RETAIN * 0.6)  # several sweeps ran: nothing is due yet
            assert http.get(finished).content == b"hello"
            assert http.get(empty).status_code == 200

            def gone() -> bool:
                answers = [http.head(url, headers=TUS).status_code for url in (finished, empty)]
                return answers == [404, 404]

            assert wait_until(gone, timeout=RETAIN + 5), server.output
            assert time.monotonic() - finished_at >= RETAIN
            assert http.head(unfinished, headers=TUS).headers["Upload-Offset"] == "3"
    finally:
        server.stop()
    names = " ".join(str(p.relative_to(upload_dir)) for p in upload_dir.rglob("*"))
    for url in (finished, empty):
        assert url.rsplit("/", 1)[1] not in names
    assert unfinished.rsplit("/", 1)[1] in names
