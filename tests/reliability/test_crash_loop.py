"""Crash loop: uploads through two instances while one of them is killed (SIGKILL) at random
moments and restarted; clients resume through whichever instance is up.

Figures: uploads that completed with the right SHA-256 out of those started (goal: all), bytes
re-sent in total (the price of the crashes: bytes received but not yet committed when the process
died), and bytes re-sent beyond what the protocol requires (re-sent although a server had already
reported them stored: must be 0).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from tests.reliability.backends import (
    FAST_LOCKS,
    MiB,
    payload,
    random_size,
    redis_args,
    s3_args,
)
from tests.reliability.client import ResilientUpload, failures, http_client, summarize
from tests.reliability.cluster import Cluster, running_cluster
from tests.reliability.conftest import Scale
from tests.reliability.figures import rate, record
from tests.support.s3_client import new_bucket
from tests.support.servers import RedisServer, S3Server


async def chaos(
    cluster: Cluster, rng: random.Random, stop: asyncio.Event, every: tuple[float, float]
) -> None:
    """Kill a random running instance every `every` seconds (a random pick in that range);
    bring it back 0.1-1.5 s later."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(*every))
            return
        except TimeoutError:
            pass
        victim = cluster.pick_up(rng)
        if victim is None:
            continue
        victim.kill()
        await asyncio.sleep(rng.uniform(0.1, 1.5))
        await asyncio.to_thread(victim.start)


@pytest.mark.parametrize("store", ["file", "s3"])
async def test_crash_loop(
    store: str,
    scale: Scale,
    seed: int,
    redis: RedisServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    rng = random.Random(seed)
    if store == "file":
        count, largest = scale.pick((20, 12 * MiB), (60, 64 * MiB))
        storage: tuple[str, ...] = ()
    else:
        s3: S3Server = request.getfixturevalue("s3")
        count, largest = scale.pick((8, 12 * MiB), (50, 64 * MiB))
        storage = s3_args(new_bucket(s3, "rel"), s3.endpoint)
    parallel = scale.pick(4, 6)
    # Per client: a fast local network, slow enough that crashes land in the middle of bodies.
    speed = scale.pick(2 * MiB, 8 * MiB)
    args = (*redis_args(redis), *storage, *FAST_LOCKS, "--read-timeout", "10s")
    sizes = [random_size(rng, largest) for _ in range(count)]
    time_limit = scale.pick(150.0, 900.0)

    with running_cluster(["a", "b"], tmp_path / "uploads", args) as cluster:
        started = time.monotonic()
        deadline = started + time_limit
        stop = asyncio.Event()
        gate = asyncio.Semaphore(parallel)

        async with http_client() as http:

            async def one(index: int, size: int) -> ResilientUpload:
                async with gate:
                    upload = ResilientUpload(
                        f"upload-{index}",
                        payload(seed + index, size),
                        cluster.endpoints,
                        http,
                        random.Random(seed * 1000 + index),
                        chunk=rng.choice([None, None, 2 * MiB, 5 * MiB]),
                        creation_with_upload=rng.random() < 0.3,
                        deadline=deadline,
                        rate=speed,
                    )
                    await upload.run()
                    upload.data = b""
                    return upload

            every = scale.pick((0.3, 1.5), (0.5, 2.5))
            chaos_task = asyncio.create_task(chaos(cluster, random.Random(seed + 1), stop, every))
            try:
                uploads = await asyncio.gather(*(one(i, s) for i, s in enumerate(sizes)))
            finally:
                stop.set()
                await chaos_task
        duration = time.monotonic() - started

    outcomes = [u.outcome for u in uploads]
    figures = summarize(outcomes)
    record(
        f"crash-loop-{store}-{scale.name}",
        {
            "store": store,
            "seed": seed,
            "instances": 2,
            "largest_upload": largest,
            "parallel_clients": parallel,
            "client_speed_bytes_per_s": speed,
            "kills": cluster.kills,
            "kill_every_s": list(every),
            "duration_s": round(duration, 1),
            **figures,
            "bytes_resent_per_kill": figures["bytes_resent"] // max(1, cluster.kills),
            "completion_rate": rate(figures["uploads_verified_sha256"], len(outcomes)),
        },
    )
    problems = failures(outcomes)
    assert not problems, "\n".join(problems)
