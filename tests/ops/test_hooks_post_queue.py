"""post-* hooks from a bounded queue: a bad receiver never slows or fails uploads.

The load tests run a real server process against a receiver in the test's loop that answers
pre-create at once and, on post-* events, sleeps, answers 500 or hangs up. Each measures 150
uploads (a creation and a 1 KiB PATCH each), 50 at a time, first against a healthy receiver and
then against the bad one, on the same server: every request succeeds and the 99th percentile
stays within 5x the healthy one + 0.5s (the machine is shared and noisy). Shutdown then drops
what the drain timeout (1s here) could not deliver, with one log line, and does not wait for the
sleeping receiver.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.ops.conftest import AppFactory
from tests.ops.helpers import create
from tests.support.hook_load import (
    UPLOADS,
    misbehave,
    p99,
    root,
    upload_many,
)
from tests.support.hook_receiver import HookReceiver
from tests.support.tusd_process import TusdProcess
from tusd_py.hooks import HookEvent, HookType, HttpHookClient, HTTPRequestInfo
from tusd_py.info import UploadInfo
from tusd_py.request_context import current_request

DRAIN = 1.0
QUEUE_FULL = "the post-* hook queue is full"
SHUTDOWN_DROP = "shutdown: post-* hook deliveries did not finish"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def start_server(tmp_path: Path, *args: str) -> TusdProcess:
    return await asyncio.to_thread(TusdProcess, tmp_path / "uploads", args)


async def stop_server(server: TusdProcess) -> float:
    """SIGTERM and wait in a thread (the receiver lives in this loop); the seconds it took."""
    start = time.perf_counter()
    await asyncio.to_thread(server.stop, 15.0)
    return time.perf_counter() - start


async def metric(server: TusdProcess, line_start: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(root(server.endpoint) + "/metrics")).text
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)
    ]
    return sum(values)


@pytest.mark.parametrize("how", ["sleeps", "answers 500", "hangs up"])
async def test_a_bad_post_hook_receiver_leaves_uploads_fast(
    tmp_path: Path, receiver: HookReceiver, how: str
) -> None:
    server = await start_server(
        tmp_path, "--hooks-http", receiver.url, "--hooks-post-drain-timeout", f"{DRAIN}s"
    )
    try:
        await upload_many(server.endpoint)  # warm-up: imports, first connections
        base_create, base_patch, base_statuses = await upload_many(server.endpoint)
        assert set(base_statuses) == {201, 204}, base_statuses
        misbehave(receiver, how)
        pre_creates = len(receiver.of("pre-create"))
        creations, patches, statuses = await upload_many(server.endpoint)
        dropped = await metric(server, "tusd_hook_dropped_total")
    finally:
        shutdown = await stop_server(server)

    print(
        f"{how}: creation p99 {p99(base_create):.3f}s -> {p99(creations):.3f}s "
        f"(max {max(creations):.3f}s), PATCH p99 {p99(base_patch):.3f}s -> {p99(patches):.3f}s, "
        f"shutdown {shutdown:.2f}s"
    )
    assert statuses.count(201) == UPLOADS and statuses.count(204) == UPLOADS, statuses
    assert len(receiver.of("pre-create")) == pre_creates + UPLOADS
    assert p99(creations) < 5 * p99(base_create) + 0.5
    assert p99(patches) < 5 * p99(base_patch) + 0.5
    assert dropped == 0  # 900 events fit in the queue; none is lost while the server runs
    # Nothing stalls shutdown: it drains for DRAIN seconds and drops the rest with one line.
    assert server.proc.returncode in (0, -signal.SIGTERM), server.output  # uvicorn re-raises it
    assert shutdown < DRAIN + 4.0, server.output
    assert len([line for line in server.lines if SHUTDOWN_DROP in line]) == 1, server.output
    assert "Traceback" not in server.output


async def test_a_full_queue_drops_counts_and_logs_once(
    tmp_path: Path, receiver: HookReceiver
) -> None:
    receiver.delays["post-create"] = 20.0
    server = await start_server(
        tmp_path,
        "--hooks-http", receiver.url,
        "--hooks-enabled-events", "pre-create,post-create",
        "--hooks-post-workers", "1",
        "--hooks-post-queue-size", "5",
        "--hooks-post-drain-timeout", f"{DRAIN}s",
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=root(server.endpoint)) as client:
            for _ in range(30):  # one at a time: one delivery in flight, 5 queued, 24 dropped
                assert (await create(client, 1)).status_code == 201
        dropped = await metric(server, 'tusd_hook_dropped_total{hook="post-create"}')
        queued = await metric(server, "tusd_hook_queued ")
    finally:
        shutdown = await stop_server(server)
    assert dropped == 24
    assert queued == 5
    assert len([line for line in server.lines if QUEUE_FULL in line]) == 1, server.output
    (line,) = [line for line in server.lines if SHUTDOWN_DROP in line]
    assert "5 queued events dropped, 1 deliveries in flight cancelled" in line
    assert shutdown < DRAIN + 4.0, server.output
    assert len(receiver.of("post-create")) == 1


# --- in-process: Python post-* functions go through the same queue -------------------------


async def test_python_post_hooks_are_queued_and_a_new_burst_logs_again(
    tus_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gate, delivered = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def post_create(event: HookEvent) -> None:
        assert current_request.get() is not None  # the context of the request that fired it
        await gate.wait()
        done.append(event.upload.id)
        delivered.set()

    dropped = sample("tusd_hook_dropped_total", hook="post-create")
    caplog.set_level(logging.WARNING, "tusd_py.hooks")
    options: dict[str, Any] = {"hooks_post_workers": 1, "hooks_post_queue_size": 4}
    async with tus_app(hooks={"post-create": post_create}, **options) as client:
        for burst in (1, 2):
            gate.clear()
            for _ in range(10):  # each answers at once, though the hook is stuck
                response = await asyncio.wait_for(create(client, 1), 2.0)
                assert response.status_code == 201
            assert sample("tusd_hook_dropped_total", hook="post-create") == dropped + 5 * burst
            assert [r.message for r in caplog.records].count(_queue_full(4)) == burst
            gate.set()
            async with asyncio.timeout(5):
                while len(done) < 5 * burst:
                    delivered.clear()
                    await delivered.wait()
    assert len(done) == 10


def _queue_full(size: int) -> str:
    return (
        f"the post-* hook queue is full ({size} events): dropping new events until it is "
        "half empty again (tusd_hook_dropped_total counts them)"
    )


async def test_shutdown_drains_within_its_timeout(
    tus_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    done: list[str] = []

    async def post_create(event: HookEvent) -> None:
        await asyncio.sleep(0.3)
        done.append(event.upload.id)

    dropped = sample("tusd_hook_dropped_total", hook="post-create")
    caplog.set_level(logging.WARNING, "tusd_py.hooks")
    options: dict[str, Any] = {"hooks_post_workers": 1, "hooks_post_drain_timeout": 1.0}
    app = tus_app(hooks={"post-create": post_create}, **options)
    client = await app.__aenter__()
    for _ in range(10):
        assert (await create(client, 1)).status_code == 201
    start = time.perf_counter()
    await app.__aexit__(None, None, None)
    took = time.perf_counter() - start

    assert 0.9 < took < 1.5
    assert 2 <= len(done) <= 4
    lost = sample("tusd_hook_dropped_total", hook="post-create") - dropped
    assert len(done) + lost + 1 == 10  # delivered, dropped from the queue, one cancelled
    (line,) = [r.message for r in caplog.records if SHUTDOWN_DROP in r.message]
    assert f"{int(lost)} queued events dropped, 1 deliveries in flight cancelled" in line


async def test_shutdown_delivers_everything_it_can(
    tus_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    done: list[str] = []

    async def post_create(event: HookEvent) -> None:
        await asyncio.sleep(0.02)
        done.append(event.upload.id)

    caplog.set_level(logging.WARNING, "tusd_py.hooks")
    async with tus_app(hooks={"post-create": post_create}, hooks_post_workers=2) as client:
        for _ in range(20):
            assert (await create(client, 1)).status_code == 201
    assert len(done) == 20
    assert not [r for r in caplog.records if SHUTDOWN_DROP in r.message]


# --- the two connection pools of the HTTP client ---------------------------------------------


def _event(hook: HookType) -> HookEvent:
    return HookEvent(hook, UploadInfo(id="u1", length=1), HTTPRequestInfo(), None)


@pytest.fixture
async def http_client(receiver: HookReceiver) -> AsyncIterator[HttpHookClient]:
    client = HttpHookClient(
        receiver.url, retries=0, timeout=0.5, pre_connections=1, post_connections=1
    )
    try:
        yield client
    finally:
        await client.close()


async def test_pre_hooks_never_wait_behind_post_deliveries(
    receiver: HookReceiver, http_client: HttpHookClient
) -> None:
    receiver.delays["post-finish"] = 20.0
    stuck = asyncio.create_task(http_client.call(_event(HookType.POST_FINISH)))
    await receiver.wait_for("post-finish")
    start = time.perf_counter()
    await http_client.call(_event(HookType.PRE_CREATE))
    assert time.perf_counter() - start < 0.3
    stuck.cancel()


async def test_the_wait_for_a_connection_does_not_count_against_the_try(
    receiver: HookReceiver, http_client: HttpHookClient
) -> None:
    # One pre-* connection, each answer takes 0.3s of a 0.5s timeout: the second call waits
    # 0.3s for the connection and then has its full 0.5s (aiohttp's `total` would fail it).
    receiver.delays["pre-create"] = 0.3
    await asyncio.gather(
        http_client.call(_event(HookType.PRE_CREATE)),
        http_client.call(_event(HookType.PRE_CREATE)),
    )
    assert len(receiver.of("pre-create")) == 2
