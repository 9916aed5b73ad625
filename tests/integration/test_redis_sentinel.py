"""Sentinel failover under load: a primary, two replicas and three Sentinels (real redis-server
processes); two tusd-py instances sharing an upload directory; several uploads in 1 MiB PATCHes
through both at once; `kill -9` of the primary mid-upload. Sentinel promotes a replica, the
instances follow it, every upload completes with its SHA-256, and with
`--redis-wait-replicas 1` no HEAD answers an offset lower than one a client was already given.

Two replicas, not one: with `--redis-wait-replicas 1` and a single replica, the promoted replica
has none left, and every commit answers 503 until one is back (as docs/redis.md says)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.integration.redis_helpers import CHUNK, Upload, metric, upload
from tests.support.redis_topologies import MASTER, SentinelGroup, sentinel_group
from tests.support.s3_client import new_bucket
from tests.support.servers import S3Server
from tests.support.tus_requests import wait_until
from tests.support.tusd_process import TusdProcess

UPLOADS = 6
SIZE = 12 * CHUNK
# Requests may still fail this long after the promotion is visible, no longer.
LATE_AFTER = 5.0


def start_pair(
    tmp_path: Path, group: SentinelGroup, store_args: tuple[str, ...], wait: int
) -> list[TusdProcess]:
    args = (
        *store_args,
        "--redis-sentinels", group.sentinel_addresses,
        "--redis-sentinel-master", MASTER,
        "--redis-wait-replicas", str(wait),
        "--redis-wait-timeout", "2s",
        # A request cut off by the failover cannot release its lock: the next one waits for
        # the lease (docs/redis.md, hazards); short here to keep the test short.
        "--lock-lease", "3s",
        "--log-level", "warning",
    )  # fmt: skip
    return [TusdProcess(tmp_path / "uploads", args) for _ in range(2)]


def subscribers(group: SentinelGroup, address: str) -> int:
    host, port = address.rsplit(":", 1)
    with redis.Redis(
        host=host, port=int(port), socket_timeout=2, **group.client_kwargs()
    ) as client:
        # Each instance listens on a channel of its own, <prefix>:locks:<instance>.
        channels = client.pubsub_channels("tusd:locks:*")
        counts = client.pubsub_numsub(*channels) if channels else []
    return sum(int(count) for _, count in counts)


async def run_and_fail_over(
    servers: list[TusdProcess], group: SentinelGroup, items: list[Upload]
) -> tuple[float, float, str, str]:
    timeout = httpx.Timeout(30.0)
    async with httpx.AsyncClient(timeout=timeout) as client:
        tasks = [asyncio.create_task(upload(client, servers, item)) for item in items]
        # Kill once every upload has some offset acknowledged and none is done.
        while min(item.given for item in items) < 2 * CHUNK:
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.02)
        old = group.kill_primary()
        killed_at = time.monotonic()
        new = await asyncio.to_thread(group.wait_for_failover, old)
        promoted_at = time.monotonic()
        await asyncio.gather(*tasks)
    return killed_at, promoted_at, old, new


@pytest.mark.parametrize(
    ("store", "replicas", "wait", "tls"),
    [
        ("file", 2, 1, False),
        ("s3", 2, 1, False),
        # The shape of the issue without WAIT: uploads complete all the same, but an offset
        # acknowledged just before the kill may be one the promoted replica never received.
        ("file", 1, 0, False),
        # Data nodes and Sentinels on TLS only: rediss:// reaches both with the CA file.
        ("file", 2, 1, True),
    ],
)
def test_uploads_survive_a_failover(
    tmp_path: Path,
    store: str,
    replicas: int,
    wait: int,
    tls: bool,
    request: pytest.FixtureRequest,
) -> None:
    with sentinel_group(replicas=replicas, tls=tls) as group:
        failover_under_load(tmp_path, group, store, wait, request)


def failover_under_load(
    tmp_path: Path, group: SentinelGroup, store: str, wait: int, request: pytest.FixtureRequest
) -> None:
    store_args: tuple[str, ...] = ()
    if store == "s3":
        # The S3 store with its incomplete parts in Redis (--s3-tails auto): tails written
        # before a commit are in the replication stream ahead of it, so its WAIT covers them.
        s3: S3Server = request.getfixturevalue("s3")
        store_args = ("--s3-bucket", new_bucket(s3), "--s3-endpoint", s3.endpoint,
                      "--s3-part-size", "5MiB")  # fmt: skip
    if group.ca_file is not None:
        store_args += ("--redis-url", f"rediss://{MASTER}/0", "--redis-ca-file", str(group.ca_file))
    servers = start_pair(tmp_path, group, store_args, wait)
    try:
        items = [Upload(os.urandom(SIZE)) for _ in range(UPLOADS)]
        killed_at, promoted_at, old, new = asyncio.run(run_and_fail_over(servers, group, items))
        assert new != old
        for item in items:
            if wait:
                assert not item.regressions, (item.url, item.regressions)
            got = httpx.get(item.url, timeout=60)
            assert got.status_code == 200
            assert hashlib.sha256(got.content).digest() == hashlib.sha256(item.data).digest()
        # The instances followed the primary: /ready names the new one, metrics saw it move.
        for server in servers:
            ready = httpx.get(server.endpoint.replace("/files/", "/ready"), timeout=30)
            assert ready.status_code == 200, ready.text
            assert f"redis: sentinel (master {MASTER}), primary {new}" in ready.text, ready.text
            assert f"redis replicas: {len(group.replicas) - 1} connected" in ready.text, ready.text
        # Both lock-handover subscriptions moved to the new primary.
        assert wait_until(lambda: subscribers(group, new) == len(servers), 30)
        assert sum(metric(s, "tusd_redis_failovers_total") for s in servers) >= 1
        assert sum(metric(s, "tusd_redis_reconnects_total") for s in servers) >= 1
        # Soon after the Sentinels named the new primary (time for each instance to ask them;
        # generous for a loaded machine), nothing fails any more: no storm of 5xx.
        late = [f for i in items for f in i.failures if f[0] > promoted_at + LATE_AFTER]
        assert not late, late
        recovered = max(item.finished_at for item in items) - killed_at
        first_after = min(t for i in items for t in i.acknowledged_at if t > killed_at) - killed_at
        # Every upload made progress again, not just one of them.
        each_after = max(
            min(t for t in i.acknowledged_at if t > killed_at) - killed_at for i in items
        )
        print(
            f"\n{store}{' TLS' if group.ca_file else ''}: failover {old} -> {new}: "
            f"{len(items)}/{len(items)} uploads complete, "
            f"{sum(i.errors for i in items)} failed PATCHes, "
            f"{sum(len(i.failures) for i in items)} failed requests, "
            f"promoted {promoted_at - killed_at:.1f}s after the kill, "
            f"{sum(i.resent for i in items) / CHUNK:.0f} MiB re-sent, "
            f"first 204 {first_after:.1f}s after the kill, every upload's by {each_after:.1f}s, "
            f"last upload done {recovered:.1f}s after the kill, "
            f"{sum(len(i.regressions) for i in items)} HEADs below an offset given"
        )
    finally:
        for server in servers:
            server.stop()
        for server in servers:
            assert "Traceback" not in server.output, server.output
