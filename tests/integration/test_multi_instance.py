"""Two real server processes sharing one Redis and one upload directory.

Everything goes over raw HTTP (httpx, or a bare socket where a client must misbehave), and every
upload ends with a SHA-256 comparison of what the servers stored against what was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import kill_process
from tests.support.servers import RedisServer, redis_down, unique_prefix
from tests.support.socket_http import RawHTTP, patch_headers, raw_create
from tests.support.tus_requests import TUS, download_sha256, head
from tests.support.tusd_process import TusdProcess

MiB = 1024 * 1024

StartPair = Callable[..., tuple[TusdProcess, TusdProcess]]


@pytest.fixture
def start_pair(redis: RedisServer, tmp_path: Path) -> Iterator[StartPair]:
    """`start_pair(*extra_args)`: servers A and B on one Redis prefix and one directory."""
    started: list[TusdProcess] = []
    upload_dir = tmp_path / "uploads"
    upload_dir.mkdir()
    prefix = unique_prefix()

    def start(*extra_args: str) -> tuple[TusdProcess, TusdProcess]:
        args = ("--redis-url", redis.url, "--redis-prefix", prefix, *extra_args)
        for _ in range(2):
            started.append(TusdProcess(upload_dir, args))
        return started[-2], started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()
            print(f"--- output of {' '.join(server.args[1:])} (exit {server.proc.returncode})")
            print(server.output)


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_file(server: TusdProcess, url: str) -> bytes:
    return (server.upload_dir / url.rstrip("/").rsplit("/", 1)[-1]).read_bytes()


def offset_of(url: str) -> int:
    response = head(url)
    assert response.status_code in (200, 204), f"HEAD {url}: {response.status_code} {response.text}"
    return int(response.headers["Upload-Offset"])


def patch(url: str, offset: int, data: bytes) -> httpx.Response:
    return httpx.patch(
        url,
        content=data,
        headers={
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=30,
    )


def finish_and_verify(a: TusdProcess, b: TusdProcess, url: str, data: bytes) -> None:
    """Send whatever is missing through B, then check the bytes through both servers and disk."""
    offset = offset_of(b.url_for(url))
    if offset < len(data):
        response = patch(b.url_for(url), offset, data[offset:])
        assert response.status_code == 204, response.text
        assert response.headers["Upload-Offset"] == str(len(data))
    expected = (len(data), sha256(data))
    assert download_sha256(a.url_for(url)) == expected
    assert download_sha256(b.url_for(url)) == expected
    assert sha256(stored_file(a, url)) == expected[1]


def test_upload_started_on_one_instance_resumes_on_the_other(start_pair: StartPair) -> None:
    a, b = start_pair()
    data = payload(3 * MiB)
    half = len(data) // 2
    url = raw_create(a.endpoint, len(data))

    response = patch(url, 0, data[:half])
    assert response.status_code == 204, response.text
    assert offset_of(b.url_for(url)) == half

    response = patch(b.url_for(url), half, data[half:])
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    finish_and_verify(a, b, url, data)


def test_silent_patch_on_one_instance_hands_over_to_the_other(start_pair: StartPair) -> None:
    a, b = start_pair()
    data = payload(2 * MiB)
    sent = 1536 * 1024
    url = raw_create(a.endpoint, len(data))

    with RawHTTP(url, timeout=10) as silent:
        # All headers, part of the body, then nothing: the client noticed a dead connection
        # before the server did, and resumes through another instance.
        silent.send_head("PATCH", patch_headers(0, len(data)))
        silent.send(data[:sent])
        time.sleep(0.5)  # let A read what was sent

        started = time.monotonic()
        offset = offset_of(b.url_for(url))
        handover = time.monotonic() - started
        assert handover < 3.0, f"HEAD on B waited {handover:.2f}s for A's lock"
        assert offset == sent

        answer = silent.read_response()  # A stopped reading, committed and answered
        assert answer.status == 204
        assert answer.headers["upload-offset"] == str(sent)

    finish_and_verify(a, b, url, data)


async def test_simultaneous_patches_on_both_instances(start_pair: StartPair) -> None:
    a, b = start_pair()
    data = payload(4 * MiB)
    url = raw_create(a.endpoint, len(data))

    async def slow_body() -> AsyncIterator[bytes]:
        step = 128 * 1024
        for i in range(0, len(data), step):
            yield data[i : i + step]
            await asyncio.sleep(0.02)

    async def send(client: httpx.AsyncClient, target: str) -> tuple[int, int | None] | str:
        try:
            response = await client.patch(
                target,
                content=slow_body(),
                headers={
                    **TUS,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(len(data)),
                },
            )
        except httpx.TransportError as exc:
            return f"interrupted: {exc!r}"  # the server answered and closed mid-body
        offset = response.headers.get("Upload-Offset")
        return response.status_code, None if offset is None else int(offset)

    async with httpx.AsyncClient(timeout=30) as ca, httpx.AsyncClient(timeout=30) as cb:
        outcomes = await asyncio.gather(send(ca, url), send(cb, b.url_for(url)))

    statuses = [o[0] if isinstance(o, tuple) else "interrupted" for o in outcomes]
    assert all(s in (204, 409, 423, "interrupted") for s in statuses), outcomes
    # At most one request wrote: the one that got the lock second either found the offset
    # moved (409), timed out (423), or found nothing written because it interrupted the first
    # before any byte was committed. Two 204s with bytes would mean both appended at offset 0.
    writers = [o for o in outcomes if isinstance(o, tuple) and o[0] == 204 and o[1]]
    assert len(writers) <= 1, outcomes

    offset = offset_of(url)
    assert stored_file(a, url)[:offset] == data[:offset]
    finish_and_verify(a, b, url, data)


def test_killed_lock_holder_is_taken_over_after_its_lease(start_pair: StartPair) -> None:
    lease = 1.0
    a, b = start_pair("--lock-lease", f"{lease}s")
    data = payload(3 * MiB)
    sent = 1536 * 1024  # more than the store's write buffer: some bytes reach the file
    url = raw_create(a.endpoint, len(data))

    with RawHTTP(url, timeout=10) as doomed:
        doomed.send_head("PATCH", patch_headers(0, len(data)))
        doomed.send(data[:sent])
        time.sleep(0.5)
        kill_process(a.proc)  # SIGKILL mid-PATCH, lock held: no commit, no release

    started = time.monotonic()
    response = head(b.url_for(url))
    waited = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert waited < lease + 2.0, f"B waited {waited:.2f}s for a lease of {lease}s"
    offset = int(response.headers["Upload-Offset"])
    assert offset <= sent
    finish_and_verify(b, b, url, data)


def test_redis_restart_is_503_then_service_resumes(
    redis: RedisServer, start_pair: StartPair
) -> None:
    a, b = start_pair()
    data = payload(2 * MiB)
    half = len(data) // 2
    url = raw_create(a.endpoint, len(data))
    assert patch(url, 0, data[:half]).status_code == 204

    with redis_down(redis):
        for server in (a, b):
            started = time.monotonic()
            response = head(server.url_for(url))
            assert response.status_code == 503, response.text
            assert int(response.headers["Retry-After"]) > 0
            assert time.monotonic() - started < 5.0
        response = httpx.post(b.endpoint, headers={**TUS, "Upload-Length": "10"}, timeout=30)
        assert response.status_code == 503, response.text
        assert "Redis is unreachable" in response.text
        assert int(response.headers["Retry-After"]) > 0

    # Redis is back, and empty: state is rebuilt from the upload directory.
    assert offset_of(b.url_for(url)) == half
    finish_and_verify(a, b, url, data)
    response = httpx.post(b.endpoint, headers={**TUS, "Upload-Length": "10"}, timeout=30)
    assert response.status_code == 201, response.text
