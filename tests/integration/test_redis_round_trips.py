"""What each request costs in Redis round trips, counted by `MONITOR` on a real redis-server.

Each command a client sends is one round trip (nothing is pipelined); the commands a script runs
inside Redis show up in MONITOR as `lua` and are not counted. docs/redis.md has the same table:
a change that adds a round trip to one of these requests fails here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import MonitorCommandInfo

from tests.support.in_process import app_client
from tests.support.s3_client import new_bucket
from tests.support.servers import RedisServer, S3Server, unique_prefix
from tusd_py.config import Config

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = b"x" * 65536
# What redis-py sends on a new connection, once per pooled connection.
CONNECTION_SETUP = ["PING", "HELLO", "CLIENT"]


class Monitor:
    """The commands that other clients send to Redis while a block runs, in order."""

    def __init__(self, url: str) -> None:
        self._watcher = Redis.from_url(url, decode_responses=True)
        self._marker = Redis.from_url(url, decode_responses=True)
        self._seen: list[MonitorCommandInfo] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Monitor:
        monitor = self._watcher.monitor()
        await monitor.__aenter__()  # type: ignore[no-untyped-call]
        self._monitor = monitor

        async def read() -> None:
            async for command in monitor.listen():
                self._seen.append(command)
                self._arrived.set()

        self._task = asyncio.create_task(read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._monitor.__aexit__()  # type: ignore[no-untyped-call]
        await self._marker.aclose()
        await self._watcher.aclose()

    async def _mark(self) -> int:
        """Send a marker and wait until MONITOR shows it; its index in what was seen."""
        marker = f"round-trips-{uuid.uuid4().hex}"
        await self._marker.echo(marker)
        async with asyncio.timeout(10):
            while True:
                for index, command in enumerate(self._seen):
                    if command["command"] == f"ECHO {marker}":
                        return index
                self._arrived.clear()
                await self._arrived.wait()

    @contextlib.asynccontextmanager
    async def counting(self) -> AsyncIterator[list[str]]:
        """Yields the list that, after the block, holds each round trip's command name."""
        names: list[str] = []
        start = await self._mark()
        yield names
        end = await self._mark()
        in_transaction = False
        for command in self._seen[start + 1 : end]:
            if command["client_type"] == "lua":
                continue
            name = command["command"].split(" ", 1)[0].upper()
            # A MULTI ... EXEC transaction is pipelined: one round trip.
            if name == "MULTI":
                in_transaction = True
                names.append("MULTI/EXEC")
            elif name == "EXEC":
                in_transaction = False
            elif not in_transaction:
                names.append(name)


@pytest.fixture
async def monitor(redis: RedisServer) -> AsyncIterator[Monitor]:
    async with Monitor(redis.url) as watching:
        yield watching


def file_config(redis: RedisServer, tmp_path: Path) -> Config:
    """The file store with Redis state."""
    return Config(upload_dir=str(tmp_path), redis_url=redis.url, redis_prefix=unique_prefix())


async def create(client: httpx.AsyncClient, length: int, body: bytes | None = None) -> str:
    headers = {**TUS, "Upload-Length": str(length)}
    if body is not None:
        headers["Content-Type"] = "application/offset+octet-stream"
    response = await client.post("/files/", headers=headers, content=body)
    assert response.status_code == 201, response.text
    return response.headers["Location"]


async def patch(client: httpx.AsyncClient, url: str, offset: int, body: bytes) -> None:
    headers = {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    response = await client.patch(url, headers=headers, content=body)
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(offset + len(body))


async def test_round_trips_per_request_with_the_file_store(
    redis: RedisServer, monitor: Monitor, tmp_path: Path
) -> None:
    async with app_client(file_config(redis, tmp_path)) as client:
        # The first request of a new process: the scripts were loaded at start, so it pays no
        # NOSCRIPT reply and SCRIPT LOAD repeat, only the set-up of the pool's first command
        # connection (the one used at start went to the handover subscription).
        async with monitor.counting() as first:
            url = await create(client, 3 * len(CHUNK))
        assert first == [*CONNECTION_SETUP, "EVALSHA"]

        async with monitor.counting() as creation:
            url = await create(client, 3 * len(CHUNK))
        assert creation == ["EVALSHA"]

        async with monitor.counting() as head:
            response = await client.head(url, headers=TUS)
            assert response.headers["Upload-Offset"] == "0"
        assert head == ["EVALSHA"]  # lock holder and state in one script; no lock taken

        async with monitor.counting() as one_commit:
            await patch(client, url, 0, CHUNK)
        assert one_commit == ["EVALSHA", "EVALSHA"]  # acquire + read; commit + release

        async with monitor.counting() as with_checksum:
            digest = "sha1 " + base64.b64encode(hashlib.sha1(CHUNK).digest()).decode()
            response = await client.patch(
                url,
                headers={
                    **TUS,
                    "Upload-Offset": str(len(CHUNK)),
                    "Content-Type": "application/offset+octet-stream",
                    "Upload-Checksum": digest,
                },
                content=CHUNK,
            )
            assert response.status_code == 204, response.text
        assert with_checksum == ["EVALSHA", "EVALSHA"]

        # The last PATCH also records the completion: commit, then the info with `completed`
        # (after the store finished the upload) and the release in one script.
        async with monitor.counting() as last:
            await patch(client, url, 2 * len(CHUNK), CHUNK)
        assert last == ["EVALSHA", "EVALSHA", "EVALSHA"]

        async with monitor.counting() as with_upload:
            url = await create(client, 2 * len(CHUNK), CHUNK)
        # create + acquire; commit + release
        assert with_upload == ["EVALSHA", "EVALSHA"]

        async with monitor.counting() as whole:
            url = await create(client, len(CHUNK), CHUNK)
        # create + acquire; commit; the info with `completed` + release
        assert whole == ["EVALSHA", "EVALSHA", "EVALSHA"]

        async with monitor.counting() as deletion:
            response = await client.delete(url, headers=TUS)
            assert response.status_code == 204
        assert deletion == ["EVALSHA", "DEL", "EVALSHA"]  # acquire + read; DEL; release


async def test_scripts_come_back_after_a_script_flush(
    redis: RedisServer, monitor: Monitor, tmp_path: Path
) -> None:
    async with app_client(file_config(redis, tmp_path)) as client:
        await create(client, 1)  # sets up the pool's connection
        url = await create(client, 3 * len(CHUNK))
        flusher = Redis.from_url(redis.url)
        try:
            await flusher.script_flush()
        finally:
            await flusher.aclose()
        async with monitor.counting() as reloading:
            await patch(client, url, 0, CHUNK)
        # Each script once refused, loaded and sent again.
        assert reloading == ["EVALSHA", "SCRIPT", "EVALSHA"] * 2
        async with monitor.counting() as again:
            await patch(client, url, len(CHUNK), CHUNK)
        assert again == ["EVALSHA", "EVALSHA"]


async def test_round_trips_of_a_patch_with_the_s3_store(
    redis: RedisServer, s3: S3Server, monitor: Monitor, tmp_path: Path
) -> None:
    config = Config(
        s3_bucket=new_bucket(s3, "tusd-"),
        s3_endpoint=s3.endpoint,
        s3_region="us-east-1",
        redis_url=redis.url,
        redis_prefix=unique_prefix(),
    )
    small = b"s" * 1000  # MONITOR lines carry the tail's bytes: keep them short
    async with app_client(config) as client:
        await create(client, 1)  # sets up the pool's connection
        url = await create(client, 3 * len(small))
        async with monitor.counting() as first:
            await patch(client, url, 0, small)
        async with monitor.counting() as second:
            await patch(client, url, len(small), small)
    # acquire + read; the incomplete part's bytes (the store's own client, whose first use sets
    # up its connection); commit + release (the store leaves the commit of its tail to the
    # caller, as the file store does).
    assert first == ["EVALSHA", *CONNECTION_SETUP, "MULTI/EXEC", "EVALSHA"]
    assert second == ["EVALSHA", "MULTI/EXEC", "EVALSHA"]


async def test_a_pre_finish_hook_keeps_the_lock_and_the_separate_release(
    redis: RedisServer, monitor: Monitor, tmp_path: Path
) -> None:
    seen: list[str] = []

    def pre_finish(event: Any) -> None:
        seen.append("pre-finish")

    async with app_client(file_config(redis, tmp_path), hooks={"pre-finish": pre_finish}) as client:
        await create(client, 1)  # sets up the pool's connection
        url = await create(client, len(CHUNK))
        async with monitor.counting() as last:
            await patch(client, url, 0, CHUNK)
    # acquire + read; commit; the info with `completed`; the hook, holding the lock; release
    assert last == ["EVALSHA", "EVALSHA", "EVALSHA", "EVALSHA"]
    assert seen == ["pre-finish"]
