"""Redis faults while uploads run through two instances on one Redis and one upload directory:
Redis restarted (empty: no persistence), Redis paused (SIGSTOP) for longer than the lock lease
and for less (but longer than the server's Redis timeout), every Redis connection killed
(CLIENT KILL), and an instance paused while it holds locks.

Figures: offsets that ever moved backwards or past the bytes stored (a watcher reads the offset
straight from Redis and the file size from disk, 20 times a second; must be 0), and uploads that
completed with the right SHA-256 after recovery (must be all).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio import Redis

from tests.reliability.backends import FAST_LOCKS, MiB, payload
from tests.reliability.client import ResilientUpload, failures, http_client, summarize
from tests.reliability.cluster import Cluster, running_cluster
from tests.reliability.conftest import Scale
from tests.reliability.figures import rate, record
from tests.support.servers import RedisServer, unique_prefix

LEASE = 2.0  # FAST_LOCKS
PAUSE = 2.5 * LEASE
# Longer than the server's Redis timeouts with their retries (3 x 2 s), shorter than the lease: a
# commit fails at the server, and Redis runs it anyway once it wakes up, under a lock still valid.
LONG_LEASE = 15.0  # the default
SHORT_PAUSE = 7.0


@dataclass
class Watcher:
    """Reads each upload's committed offset from Redis and its file size from disk, and
    remembers every offset that went backwards or past the stored bytes."""

    redis: Redis
    prefix: str
    upload_dir: Path
    highest: dict[str, int] = field(default_factory=dict)
    backwards: list[str] = field(default_factory=list)
    past_stored: list[str] = field(default_factory=list)
    samples: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for upload_id in list(self.highest):
                await self.check(upload_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    def track(self, upload_id: str, offset: int) -> None:
        self.highest.setdefault(upload_id, 0)

    async def check(self, upload_id: str) -> None:
        try:
            value = await self.redis.hget(f"{self.prefix}:{{{upload_id}}}:state", "offset")
        except Exception:
            return  # Redis is down or paused: nothing to read
        if value is None:
            return  # lost with a restart; rebuilt on the next request
        offset = int(value)
        try:
            stored = os.stat(self.upload_dir / upload_id).st_size
        except FileNotFoundError:
            stored = -1
        self.samples += 1
        if stored < offset:
            self.past_stored.append(f"{upload_id}: offset {offset} but {stored} bytes stored")
        if offset < self.highest[upload_id]:
            self.backwards.append(f"{upload_id}: offset {offset} after {self.highest[upload_id]}")
        self.highest[upload_id] = max(self.highest[upload_id], offset)


async def restart_redis(redis: RedisServer, cluster: Cluster) -> None:
    await asyncio.to_thread(redis.restart, 0.5)


async def pause_redis(redis: RedisServer, cluster: Cluster) -> None:
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(PAUSE)
    finally:
        redis.proc.send_signal(signal.SIGCONT)


async def pause_redis_within_lease(redis: RedisServer, cluster: Cluster) -> None:
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(SHORT_PAUSE)
    finally:
        redis.proc.send_signal(signal.SIGCONT)


async def drop_connections(redis: RedisServer, cluster: Cluster) -> None:
    client = Redis(host="127.0.0.1", port=redis.port)
    try:
        for kind in ("normal", "pubsub"):
            await client.execute_command("CLIENT", "KILL", "TYPE", kind, "SKIPME", "yes")  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()


async def pause_instance(redis: RedisServer, cluster: Cluster) -> None:
    """A lock holder frozen past its lease (a long GC pause, a stopped VM): others take over,
    then it wakes up and carries on with what it was doing."""
    victim = cluster.instances[0]
    victim.pause()
    try:
        await asyncio.sleep(PAUSE)
    finally:
        victim.resume()


FAULTS = {
    "restart": restart_redis,
    "pause": pause_redis,
    "pause-within-lease": pause_redis_within_lease,
    "drop-connections": drop_connections,
    "pause-instance": pause_instance,
}


@contextlib.asynccontextmanager
async def watching(watcher: Watcher) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_redis_faults(
    fault: str, scale: Scale, seed: int, redis: RedisServer, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    count, largest = scale.pick((6, 12 * MiB), (24, 64 * MiB))
    injections = scale.pick(2, 6)
    speed = scale.pick(2 * MiB, 4 * MiB)
    sizes = [rng.randint(MiB, largest) for _ in range(count)]
    prefix = unique_prefix()
    upload_dir = tmp_path / "uploads"
    lease = LONG_LEASE if fault == "pause-within-lease" else LEASE
    args = (
        "--redis-url", redis.url,
        "--redis-prefix", prefix,
        *FAST_LOCKS,
        "--lock-lease", f"{lease}s",
        "--read-timeout", "5s",
    )  # fmt: skip

    with running_cluster(["a", "b"], upload_dir, args) as cluster:
        watcher = Watcher(Redis.from_url(redis.url, socket_timeout=0.5), prefix, upload_dir)
        started = time.monotonic()
        deadline = started + scale.pick(150.0, 900.0)
        # Short client timeouts: a client stuck on a frozen instance gives up and goes elsewhere.
        async with http_client(read_timeout=4.0) as http, watching(watcher):

            async def one(index: int, size: int) -> ResilientUpload:
                upload = ResilientUpload(
                    f"upload-{index}",
                    payload(seed + index, size),
                    cluster.endpoints,
                    http,
                    random.Random(seed * 1000 + index),
                    chunk=rng.choice([None, 3 * MiB]),
                    deadline=deadline,
                    rate=speed,
                    on_offset=watcher.track,
                )
                await upload.run()
                upload.data = b""
                return upload

            async def inject() -> int:
                done = 0
                for _ in range(injections):
                    await asyncio.sleep(rng.uniform(1.0, 3.0))
                    await FAULTS[fault](redis, cluster)
                    done += 1
                return done

            injected, *uploads = await asyncio.gather(
                inject(), *(one(i, s) for i, s in enumerate(sizes))
            )
            for upload_id in list(watcher.highest):
                await watcher.check(upload_id)
        await watcher.redis.aclose()
        duration = time.monotonic() - started

    outcomes = [u.outcome for u in cast(list[ResilientUpload], uploads)]
    figures = summarize(outcomes)
    record(
        f"redis-faults-{fault}-{scale.name}",
        {
            "fault": fault,
            "seed": seed,
            "injections": injected,
            "pause_s": {
                "pause": PAUSE,
                "pause-instance": PAUSE,
                "pause-within-lease": SHORT_PAUSE,
            }.get(fault),
            "lock_lease_s": lease,
            "duration_s": round(duration, 1),
            "watcher_samples": watcher.samples,
            "watcher_offsets_backwards": len(watcher.backwards),
            "watcher_offsets_past_stored_bytes": len(watcher.past_stored),
            **figures,
            "completion_rate": rate(figures["uploads_verified_sha256"], len(outcomes)),
        },
    )
    problems = failures(outcomes) + watcher.backwards[:20] + watcher.past_stored[:20]
    assert not problems, "\n".join(problems)
