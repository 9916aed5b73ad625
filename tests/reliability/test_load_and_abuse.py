"""Load and abuse against real server processes, on the file store, file + Redis, and S3 (moto)
+ Redis (issue 14): storms of concurrent HEADs and creations, and the memory an upload with 8 KB
of metadata costs the server process and Redis.

    pytest tests/reliability/test_load_and_abuse.py -s      figures in the summary
    TUSD_SOAK=1 pytest ...                                   20,000 creations per set-up

A bad post-* hook receiver (sleeping, answering 500, hanging up) is
tests/ops/test_hooks_post_queue.py on the file store; the last test here repeats it on file +
Redis.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.reliability.figures import record
from tests.reliability.setups import SETUPS, Setup, make_setup, rss_bytes
from tests.support.hook_load import misbehave, upload_many
from tests.support.hook_receiver import HookReceiver
from tests.support.payloads import heavy_metadata
from tests.support.servers import RedisServer, S3Server
from tests.support.socket_http import RawHTTP, patch_headers
from tests.support.tusd_process import TusdProcess

TUS = {"Tus-Resumable": "1.0.0"}
HEADS = 1000
HEAD_UPLOADS = 50
CREATIONS = 500
SOAK = os.environ.get("TUSD_SOAK", "") not in ("", "0")
STORM_DEADLINE = 120.0


@pytest.fixture(params=SETUPS)
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, redis: RedisServer, s3: S3Server
) -> Setup:
    return make_setup(request.param, tmp_path, redis, s3)


def quantile(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1], 4) if len(values) > 1 else 0.0


async def storm(
    count: int, request: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]
) -> tuple[Counter[int | str], list[float], float]:
    """`count` requests at once, each on its own connection: statuses, latencies, wall time."""
    statuses: Counter[int | str] = Counter()
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    timeout = httpx.Timeout(60.0, connect=30.0, pool=60.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def one(index: int) -> None:
            start = time.perf_counter()
            try:
                response = await request(client, index)
                statuses[response.status_code] += 1
            except httpx.TransportError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        async with asyncio.timeout(STORM_DEADLINE):
            await asyncio.gather(*(one(i) for i in range(count)))
    return statuses, latencies, round(time.perf_counter() - began, 2)


async def create_uploads(endpoint: str, count: int) -> list[str]:
    async with httpx.AsyncClient(timeout=30) as client:
        urls = []
        for _ in range(count):
            created = await client.post(endpoint, headers={**TUS, "Upload-Length": "10"})
            assert created.status_code == 201, created.text
            url = created.headers["Location"]
            patched = await client.patch(
                url,
                headers={
                    **TUS,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
                content=b"hello",
            )
            assert patched.status_code == 204, patched.text
            urls.append(url)
    return urls


def figures_of(
    statuses: Counter[int | str], latencies: list[float], wall: float
) -> dict[str, object]:
    return {
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "latency_p50_s": quantile(latencies, 50),
        "latency_p99_s": quantile(latencies, 99),
        "latency_max_s": round(max(latencies), 4),
        "wall_s": wall,
    }


async def test_head_and_creation_storms(setup: Setup) -> None:
    """1,000 concurrent HEADs over 50 uploads, then 500 concurrent creations: every one 200 or
    201, no 5xx, no 423, no connection error."""
    with setup.server() as server:
        urls = await create_uploads(server.endpoint, HEAD_UPLOADS)

        async def head(client: httpx.AsyncClient, index: int) -> httpx.Response:
            return await client.head(urls[index % len(urls)], headers=TUS)

        async def create(client: httpx.AsyncClient, index: int) -> httpx.Response:
            return await client.post(server.endpoint, headers={**TUS, "Upload-Length": "100"})

        heads = await storm(HEADS, head)
        creations = await storm(CREATIONS, create)
        alive = server.proc.poll() is None
        tracebacks = server.output.count("Traceback")

    record(
        f"load_storms_{setup.name}",
        {
            "setup": setup.name,
            "heads": {"requests": HEADS, "uploads": HEAD_UPLOADS, **figures_of(*heads)},
            "creations": {"requests": CREATIONS, **figures_of(*creations)},
        },
    )
    assert alive and tracebacks == 0
    assert heads[0] == Counter({200: HEADS}), heads[0]
    assert creations[0] == Counter({201: CREATIONS}), creations[0]


ONE_UPLOAD_HEADS = 500


async def test_heads_of_one_upload_during_a_stalled_patch(setup: Setup) -> None:
    """Finding 13: 500 HEADs at once of one upload whose PATCH stalled half way (its client
    still connected, sending nothing) all answer 200 with the stalled PATCH's bytes committed;
    they used to queue for the upload's lock ({200: 70, 423: 430})."""
    with setup.server() as server:
        (url,) = await create_uploads(server.endpoint, 1)  # 5 bytes of 10 sent
        with RawHTTP(url) as stalled:
            stalled.send_head("PATCH", patch_headers(5, 5))
            stalled.send(b"abc")  # and then nothing: the PATCH holds the lock

            async def head(client: httpx.AsyncClient, index: int) -> httpx.Response:
                return await client.head(url, headers=TUS)

            await asyncio.sleep(0.3)  # the 3 bytes have arrived
            statuses, latencies, wall = await storm(ONE_UPLOAD_HEADS, head)
            answered = stalled.read_response()  # asked to let go by the HEADs, it committed
        async with httpx.AsyncClient(timeout=30) as client:
            offset = (await client.head(url, headers=TUS)).headers["Upload-Offset"]
        tracebacks = server.output.count("Traceback")
    record(f"load_one_upload_heads_{setup.name}", figures_of(statuses, latencies, wall))
    assert statuses == Counter({200: ONE_UPLOAD_HEADS}), statuses
    assert answered.status == 204 and answered.headers["upload-offset"] == offset == "8"
    assert tracebacks == 0


# --- memory per upload -----------------------------------------------------------------------

WARM_UP = 200
AT_ONCE = 20
# Bytes per upload allowed (server RSS, Redis), measured on 2 cores with margin; see
# docs/reliability.md for the figures behind them (8.9-9.6 KB of RSS with local state, whose
# cache holds each info with its 8 KB header; 10.7 KB of Redis; before finding 6's fix 33 KB).
RSS_BOUND = {"file": 15_000, "file+redis": 5_000, "s3+redis": 5_000}
REDIS_BOUND = {"file+redis": 15_000, "s3+redis": 15_000}
# The .info copy and the Redis state key of one upload, against the 8,035-character header.
STORED_BOUND = 1.5


def creations_for(setup: Setup) -> int:
    if SOAK:
        return 20_000
    return 1_000 if setup.name.startswith("s3") else 2_000


async def create_many(endpoint: str, count: int, rng: random.Random) -> Counter[int | str]:
    statuses: Counter[int | str] = Counter()
    queue = iter(range(count))
    limits = httpx.Limits(max_connections=AT_ONCE)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            for _ in queue:
                headers = {**TUS, "Upload-Length": "1000", "Upload-Metadata": heavy_metadata(rng)}
                try:
                    statuses[(await client.post(endpoint, headers=headers)).status_code] += 1
                except httpx.TransportError as exc:
                    statuses[type(exc).__name__] += 1

        async with asyncio.timeout(60 + count * 0.05):
            await asyncio.gather(*(worker() for _ in range(AT_ONCE)))
    return statuses


def redis_used(setup: Setup) -> int:
    if setup.redis is None:
        return 0
    with setup.redis_client() as client:
        return int(client.info("memory")["used_memory"])


def redis_usage_of_one(setup: Setup) -> int:
    if setup.redis is None:
        return 0
    with setup.redis_client() as client:
        for key in client.scan_iter(match=f"{setup.prefix}:*:state", count=100):
            return int(client.memory_usage(key) or 0)
    return 0


async def test_memory_per_upload_with_8kb_metadata(setup: Setup) -> None:
    """Creations with 8 KB of (random, binary) metadata: the server's RSS and Redis's memory
    grow by a bounded number of bytes per upload."""
    rng = random.Random(14)
    count = creations_for(setup)
    with setup.server() as server:
        pid = server.proc.pid
        assert await create_many(server.endpoint, WARM_UP, rng) == Counter({201: WARM_UP})
        rss_before, redis_before = rss_bytes(pid), redis_used(setup)
        began = time.perf_counter()
        statuses = await create_many(server.endpoint, count, rng)
        took = time.perf_counter() - began
        rss_after, redis_after = rss_bytes(pid), redis_used(setup)
        one_key = redis_usage_of_one(setup)
    rss_per = (rss_after - rss_before) / count
    redis_per = (redis_after - redis_before) / count
    info_sizes = [p.stat().st_size for p in setup.upload_dir.rglob("*.info")][:100]
    record(
        f"load_memory_{setup.name}{'_soak' if SOAK else ''}",
        {
            "setup": setup.name,
            "creations": count,
            "metadata_header_chars": len(heavy_metadata(random.Random(0))),
            "statuses": {str(k): v for k, v in statuses.items()},
            "creations_per_s": round(count / took, 1),
            "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_after_mib": round(rss_after / 2**20, 1),
            "rss_bytes_per_upload": round(rss_per),
            "redis_used_before_mib": round(redis_before / 2**20, 1),
            "redis_used_after_mib": round(redis_after / 2**20, 1),
            "redis_bytes_per_upload": round(redis_per),
            "redis_memory_usage_of_one_state_key": one_key,
            "local_info_file_bytes": max(info_sizes) if info_sizes else 0,
        },
    )
    assert statuses == Counter({201: count}), statuses
    assert rss_per < RSS_BOUND[setup.name], rss_per
    header = len(heavy_metadata(random.Random(0)))
    assert all(size < STORED_BOUND * header for size in info_sizes), max(info_sizes)
    if setup.name in REDIS_BOUND:
        assert redis_per < REDIS_BOUND[setup.name], redis_per
        assert one_key < STORED_BOUND * header, one_key


# --- a bad post-* hook receiver, on Redis state ---------------------------------------------


async def test_a_bad_post_hook_receiver_on_redis_state(
    tmp_path: Path, redis: RedisServer, s3: S3Server, receiver: HookReceiver
) -> None:
    """150 uploads, 50 at a time, against a healthy receiver and then one that answers 500,
    hangs up, or sleeps on every post-* event: all succeed, p99 within 5x healthy + 0.5s."""
    setup = make_setup("file+redis", tmp_path, redis, s3)
    figures: dict[str, object] = {"setup": setup.name}
    ok = True
    server: TusdProcess
    with setup.server("--hooks-http", receiver.url, "--hooks-post-drain-timeout", "1s") as server:
        await upload_many(server.endpoint)  # warm-up
        base_create, base_patch, base_statuses = await upload_many(server.endpoint)
        assert set(base_statuses) == {201, 204}, base_statuses
        base = (quantile(base_create, 99), quantile(base_patch, 99))
        figures["healthy"] = {"creation_p99_s": base[0], "patch_p99_s": base[1]}
        for how in ("answers 500", "hangs up", "sleeps"):
            receiver.scripts.clear()
            receiver.hang_up.clear()
            misbehave(receiver, how)
            creations, patches, statuses = await upload_many(server.endpoint)
            seen = (quantile(creations, 99), quantile(patches, 99))
            figures[how] = {
                "creation_p99_s": seen[0],
                "patch_p99_s": seen[1],
                "statuses": dict(Counter(statuses)),
            }
            ok = ok and Counter(statuses) == Counter({201: 150, 204: 150})
            ok = ok and all(s < 5 * b + 0.5 for s, b in zip(seen, base, strict=True))
    record("load_bad_post_hook_receiver_file+redis", figures)
    assert ok, figures
