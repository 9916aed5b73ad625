"""Helpers shared by the Redis integration tests (the servers are in tests/support/servers.py)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis

from tests.support.tusd_process import TusdProcess

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = 1024 * 1024
# Each client pauses between PATCHes so that uploads are still in flight when a primary dies.
PAUSE = 0.1
DEADLINE = 180.0


class CommandCounter:
    """Counts the commands a client sends: each is one round trip (no pipelines are used)."""

    def __init__(self, client: Redis) -> None:
        self.commands: list[str] = []
        original: Callable[..., Awaitable[Any]] = client.execute_command

        async def counting(*args: Any, **options: Any) -> Any:
            self.commands.append(str(args[0]))
            return await original(*args, **options)

        client.execute_command = counting  # type: ignore[method-assign]


@dataclass
class Upload:
    """One client's upload through a failover, and what it was told."""

    data: bytes
    url: str = ""
    given: int = 0  # the highest offset any answer told this client
    regressions: list[str] = field(default_factory=list)
    errors: int = 0
    resent: int = 0  # bytes sent again because an answer never came or was not 204
    finished_at: float = 0.0
    acknowledged_at: list[float] = field(default_factory=list)  # when each 204 arrived
    failures: list[tuple[float, str]] = field(default_factory=list)  # (when, what) of each


async def upload(
    client: httpx.AsyncClient,
    servers: list[TusdProcess],
    item: Upload,
    *,
    chunk_size: int = CHUNK,
    pause: float = PAUSE,
    within: float = DEADLINE,
) -> None:
    """Create (unless `item.url` is set) and upload `item` in PATCHes of `chunk_size`
    through the two `servers` in turn, `pause` seconds apart; after a failed PATCH, resume from
    a HEAD as tus clients do. Records every answer that was not a success."""
    turn = 0
    deadline = time.monotonic() + within

    def next_server() -> TusdProcess:
        nonlocal turn
        turn += 1
        return servers[turn % 2]

    while not item.url:
        try:
            created = await client.post(
                next_server().endpoint, headers={**TUS, "Upload-Length": str(len(item.data))}
            )
        except httpx.HTTPError:
            created = None
        if created is not None and created.status_code == 201:
            item.url = created.headers["Location"]
        else:
            item.errors += 1
            await asyncio.sleep(0.2)
        assert time.monotonic() < deadline, "no creation succeeded"
    upload_id = item.url.rstrip("/").rsplit("/", 1)[-1]
    offset = 0
    while offset < len(item.data):
        assert time.monotonic() < deadline, f"upload {upload_id} stuck at {offset}"
        server = next_server()
        chunk = item.data[offset : offset + chunk_size]
        try:
            answer = await client.patch(
                server.endpoint + upload_id,
                content=chunk,
                headers={
                    **TUS,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
            )
        except httpx.HTTPError:
            answer = None
        if answer is not None and answer.status_code == 204:
            offset = int(answer.headers["Upload-Offset"])
            item.given = max(item.given, offset)
            item.acknowledged_at.append(time.monotonic())
            await asyncio.sleep(pause)
            continue
        item.errors += 1
        item.failures.append((time.monotonic(), "PATCH " + describe(answer)))
        item.resent += len(chunk)
        offset = await resume_offset(client, servers, upload_id, item, deadline)
    item.finished_at = time.monotonic()


async def resume_offset(
    client: httpx.AsyncClient,
    servers: list[TusdProcess],
    upload_id: str,
    item: Upload,
    deadline: float,
) -> int:
    """HEAD (through either instance) until one answers; checks it never goes backwards."""
    turn = 0
    while True:
        assert time.monotonic() < deadline, f"no HEAD of {upload_id} succeeded"
        await asyncio.sleep(0.2)
        turn += 1
        try:
            answer = await client.head(servers[turn % 2].endpoint + upload_id, headers=TUS)
        except httpx.HTTPError:
            item.failures.append((time.monotonic(), "HEAD no answer"))
            continue
        if answer.status_code != 200:
            item.failures.append((time.monotonic(), "HEAD " + describe(answer)))
            continue
        offset = int(answer.headers["Upload-Offset"])
        if offset < item.given:
            item.regressions.append(f"HEAD said {offset} after {item.given} was given")
        item.given = max(item.given, offset)
        return offset


def describe(answer: httpx.Response | None) -> str:
    return "no answer" if answer is None else f"{answer.status_code} {answer.text[:120]}"


def metric(server: TusdProcess, name: str) -> float:
    text = httpx.get(server.endpoint.replace("/files/", "/metrics"), timeout=30).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0
