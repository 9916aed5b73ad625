"""S3 faults: two instances write to moto's S3 through a proxy that fails a share of all S3
requests: 500 InternalError, 503 SlowDown, connection resets before and after the request was
executed, and stalls. The server retries S3 calls itself; what survives the retries becomes a
503 for the client, which resumes with HEAD + PATCH.

Figures per fault rate: uploads completed with the right SHA-256 out of those started, requests
and faults by kind, what the clients saw.
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
from tests.reliability.cluster import running_cluster
from tests.reliability.conftest import Scale
from tests.reliability.faults import proxy_thread
from tests.reliability.figures import rate, record
from tests.support.fault_proxy import FAULTS, STALL, Decide, Request, random_faults
from tests.support.s3_client import new_bucket
from tests.support.servers import RedisServer, S3Server

KINDS = (*FAULTS, STALL)
OUTAGE = "outage"  # every S3 request fails during recurring outages, beyond the server's retries


class Outages:
    """Wrap a `Decide`: for `down` seconds out of every `period`, every request gets a 503 or a
    reset, so the server's own retries run out and the clients see 503s."""

    def __init__(self, inner: Decide, period: float, down: float, seed: int) -> None:
        self.inner, self.period, self.down = inner, period, down
        self.rng = random.Random(seed)
        self.began: float | None = None  # the first request: the servers are up

    def __call__(self, request: Request) -> str | None:
        now = time.monotonic()
        if self.began is None:
            self.began = now
        # Up first (a period's remainder), then down.
        if (now - self.began) % self.period >= self.period - self.down:
            return self.rng.choice(("503", "reset"))
        return self.inner(request)


@pytest.mark.parametrize("fault_rate", [0.05, 0.20, OUTAGE])
async def test_s3_faults(
    fault_rate: float | str,
    scale: Scale,
    seed: int,
    redis: RedisServer,
    s3: S3Server,
    tmp_path: Path,
) -> None:
    rng = random.Random(seed)
    count, largest = scale.pick((10, 12 * MiB), (50, 64 * MiB))
    parallel = scale.pick(4, 6)
    speed = 3 * MiB  # per client
    sizes = [random_size(rng, largest) for _ in range(count)]
    bucket = new_bucket(s3, "rel")  # created directly, not through the faults

    decide: Decide
    if fault_rate == OUTAGE:
        decide = Outages(random_faults(0.05, KINDS, seed=seed), period=6.0, down=3.0, seed=seed)
    else:
        assert isinstance(fault_rate, float)
        decide = random_faults(fault_rate, KINDS, seed=seed)
    with proxy_thread(s3.port, decide, stall=3.0) as proxy:
        args = (
            *redis_args(redis),
            *s3_args(bucket, proxy.endpoint),
            *FAST_LOCKS,
            "--read-timeout", "10s",
        )  # fmt: skip
        with running_cluster(["a", "b"], tmp_path / "unused", args) as cluster:
            started = time.monotonic()
            deadline = started + scale.pick(180.0, 900.0)
            gate = asyncio.Semaphore(parallel)
            async with http_client(read_timeout=40) as http:

                async def one(index: int, size: int) -> ResilientUpload:
                    async with gate:
                        upload = ResilientUpload(
                            f"upload-{index}",
                            payload(seed + index, size),
                            cluster.endpoints,
                            http,
                            random.Random(seed * 1000 + index),
                            chunk=rng.choice([None, 1 * MiB, 3 * MiB, 7 * MiB]),
                            creation_with_upload=rng.random() < 0.3,
                            deadline=deadline,
                            rate=speed,
                        )
                        await upload.run()
                        upload.data = b""
                        return upload

                uploads = await asyncio.gather(*(one(i, s) for i, s in enumerate(sizes)))
            duration = time.monotonic() - started

    outcomes = [u.outcome for u in uploads]
    label = (
        "outages-3s-every-6s" if fault_rate == OUTAGE else f"{round(float(fault_rate) * 100)}pct"
    )
    figures = summarize(outcomes)
    record(
        f"s3-faults-{label}-{scale.name}",
        {
            "fault_rate": fault_rate if fault_rate != OUTAGE else "5% + outages 3 s of every 6 s",
            "seed": seed,
            "instances": 2,
            "largest_upload": largest,
            "client_speed_bytes_per_s": speed,
            "duration_s": round(duration, 1),
            "s3_requests": sum(proxy.requests.values()),
            "s3_faults": dict(proxy.faults.most_common()),
            **figures,
            "completion_rate": rate(figures["uploads_verified_sha256"], len(outcomes)),
        },
    )
    problems = failures(outcomes)
    assert not problems, "\n".join(problems)
