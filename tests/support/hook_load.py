"""Many small uploads against a server while its post-* hook receiver misbehaves: the load that
tests/ops and tests/reliability both measure latencies under."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx

from tests.support.hook_receiver import HookReceiver
from tests.support.tus_requests import TUS

UPLOADS = 150
AT_ONCE = 50
BODY = b"x" * 1024
POST_EVENTS = ("post-create", "post-receive", "post-finish", "post-terminate")


async def upload_many(endpoint: str) -> tuple[list[float], list[float], list[int]]:
    """UPLOADS uploads, AT_ONCE at a time: creation latencies, PATCH latencies, statuses."""
    creations: list[float] = []
    patches: list[float] = []
    statuses: list[int] = []
    slots = asyncio.Semaphore(AT_ONCE)

    async def one(client: httpx.AsyncClient) -> None:
        async with slots:
            start = time.perf_counter()
            created = await client.post("/files/", headers={**TUS, "Upload-Length": str(len(BODY))})
            creations.append(time.perf_counter() - start)
            statuses.append(created.status_code)
            if created.status_code != 201:
                return
            headers = {
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            }
            start = time.perf_counter()
            patched = await client.patch(created.headers["Location"], headers=headers, content=BODY)
            patches.append(time.perf_counter() - start)
            statuses.append(patched.status_code)

    limits = httpx.Limits(max_connections=AT_ONCE)
    async with httpx.AsyncClient(base_url=root(endpoint), limits=limits, timeout=120) as client:
        await asyncio.gather(*(one(client) for _ in range(UPLOADS)))
    return creations, patches, statuses


def root(endpoint: str) -> str:
    return endpoint.removesuffix("/files/")


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


def misbehave(receiver: HookReceiver, how: str) -> None:
    for hook in POST_EVENTS:
        if how == "sleeps":
            receiver.delays[hook] = 20.0  # far beyond the latency bound and the drain timeout
        elif how == "answers 500":
            receiver.answer(hook, status=500, body=b"down")
        else:
            receiver.hang_up.add(hook)
