"""Mixed soak (issue 14): two instances sharing a file store and Redis state, under everything at
once for a while, with one of them killed (SIGKILL) and restarted again and again:

- uploads of 0 B - 4 MiB, sent at 2 MiB/s, verified by SHA-256, then deleted;
- storms of concurrent HEADs over the uploads in progress, from a pool that keeps its connections
  30 s (longer than the old keep-alive default: finding 16);
- PATCHes cut off mid-body (a close or a reset), then resumed to the end;
- slowloris connections trickling a request head until the server drops them.

Every 10 s (2.5 s in the short run) it samples each instance's RSS and open file descriptors and
Redis's `used_memory`. At the end the median of the last third of the samples must be within a
margin of the median of the middle third (the first third is the warm-up) for the instance never
killed and for Redis: nothing grows without bound. The killed instance's samples span its
restarts, so they are reported only. Every upload must complete with the right SHA-256, and no
response may be a 5xx.

    pytest tests/reliability/test_mixed_soak.py -s      about 60 s
    TUSD_SOAK=1 pytest ...                              10 minutes
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import statistics
import struct
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis as redis_py

from tests.reliability.backends import FAST_LOCKS, KiB, MiB, payload, random_size, redis_args
from tests.reliability.client import (
    TUS,
    Outcome,
    ResilientUpload,
    failures,
    http_client,
    summarize,
)
from tests.reliability.cluster import Cluster, Instance, running_cluster
from tests.reliability.figures import record
from tests.reliability.rawhttp import trickle
from tests.reliability.setups import rss_bytes
from tests.support.servers import RedisServer
from tests.support.socket_http import RawHTTP, patch_headers

SOAK = os.environ.get("TUSD_SOAK", "") not in ("", "0")
DURATION = 600.0 if SOAK else 45.0
SAMPLE_EVERY = 10.0 if SOAK else 2.5
KILL_EVERY = (40.0, 70.0) if SOAK else (10.0, 15.0)  # instance b, then restarted 0.1-1.5 s later
STORM_EVERY = 15.0 if SOAK else 6.0
STORM_HEADS = 200
UPLOADERS = 4
ABORTERS = 2
SLOWLORIS = 6
LARGEST = 4 * MiB
CLIENT_RATE = 2 * MiB  # bytes/s per upload, so that kills and aborts land inside bodies
FINISH_GRACE = 90.0  # for the uploads in flight when the soak ends
HEADER_TIMEOUT = 3.0
ARGS = (*FAST_LOCKS, "--header-timeout", f"{HEADER_TIMEOUT:g}s", "--read-timeout", "10s")
# Allowed growth, median of the last third over the median of the middle third of the samples:
# (relative, absolute).
MARGINS = {"rss": (0.10, 8 * MiB), "fds": (0.25, 32), "redis": (0.20, 1 * MiB)}
FIVE_XX = re.compile(r"\b5\d\d\b")


@dataclass
class Books:
    """What the soak saw: statuses by kind, uploads, slowloris cycles, samples."""

    started: float = field(default_factory=time.monotonic)
    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    live: dict[str, None] = field(default_factory=dict)  # ids of uploads not deleted yet
    aborted: Counter[str] = field(default_factory=Counter)
    storms_s: list[float] = field(default_factory=list)  # wall time of each HEAD storm
    slowloris_held: list[float] = field(default_factory=list)
    slowloris_answers: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)  # name: t,pid,v

    def count(self, kind: str, what: object) -> None:
        self.statuses.setdefault(kind, Counter())[str(what)] += 1

    def sample(self, name: str, pid: int, value: int) -> None:
        self.samples.setdefault(name, []).append(
            (round(time.monotonic() - self.started, 1), pid, value)
        )

    def five_xx(self) -> list[str]:
        seen = [(kind, what, n) for kind, c in self.statuses.items() for what, n in c.items()]
        for outcome in self.outcomes:
            seen += [(outcome.name, what, n) for what, n in outcome.errors.items()]
        return [f"{kind}: {what} x{n}" for kind, what, n in seen if FIVE_XX.search(what)]


def thirds(values: list[int]) -> tuple[float, float]:
    """Medians of the middle and the last third."""
    n = len(values)
    return statistics.median(values[n // 3 : 2 * n // 3]), statistics.median(values[2 * n // 3 :])


def growth_problems(books: Books) -> list[str]:
    problems = []
    for name, samples in books.samples.items():
        if len({process for _, process, _ in samples}) > 1:
            # The instance killed and restarted: each of its lives starts from nothing and the
            # thirds compare different processes, so it is reported, not judged. The survivor
            # and Redis carry the flatness checks.
            continue
        values = [v for _, _, v in samples]
        if len(values) < 6:
            problems.append(f"{name}: only {len(values)} samples")
            continue
        middle, last = thirds(values)
        relative, absolute = MARGINS[name.split(":")[0]]
        if last > middle * (1 + relative) + absolute:
            problems.append(f"{name} grew: median {middle:.0f} (middle third) -> {last:.0f}")
    return problems


def summary_of(samples: list[tuple[float, int, int]], unit: int) -> dict[str, Any]:
    values = [v for _, _, v in samples]
    middle, last = thirds(values) if len(values) >= 3 else (0.0, 0.0)
    return {
        "samples": len(values),
        "processes": len({pid for _, pid, _ in samples}),
        "first": round(values[0] / unit, 1),
        "min": round(min(values) / unit, 1),
        "max": round(max(values) / unit, 1),
        "median_middle_third": round(middle / unit, 1),
        "median_last_third": round(last / unit, 1),
        "last": round(values[-1] / unit, 1),
    }


def left_on_disk(directory: Path) -> Counter[str]:
    """The files left in the upload directory, by kind: data, .info, .progress, .tmp."""
    kinds: Counter[str] = Counter()
    for path in directory.rglob("*"):
        if path.is_file():
            kinds[path.suffix if path.suffix in (".info", ".progress", ".tmp") else "data"] += 1
            print(f"left on disk: {path.name} ({path.stat().st_size} bytes)")
    return kinds


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, cluster: Cluster, redis: RedisServer, seed: int) -> None:
        self.cluster = cluster
        self.redis = redis
        self.seed = seed
        self.rng = random.Random(seed)
        self.books = Books()
        self.stop_at = self.books.started + DURATION
        self.threads = ThreadPoolExecutor(SLOWLORIS + ABORTERS + 2, thread_name_prefix="soak")
        a, b = cluster.instances
        self.survivor, self.victim = a, b

    def running(self) -> bool:
        return time.monotonic() < self.stop_at

    async def in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.threads, fn, *args)

    # -- the load --------------------------------------------------------------------------

    def _upload(self, http: httpx.AsyncClient, name: str, size: int) -> ResilientUpload:
        rng = random.Random(f"{self.seed}-{name}")

        def seen(upload_id: str, offset: int) -> None:
            self.books.live[upload_id] = None

        return ResilientUpload(
            name,
            payload(rng.randrange(1 << 30), size),
            self.cluster.endpoints,
            http,
            rng,
            chunk=rng.choice([None, None, 1 * MiB]),
            creation_with_upload=rng.random() < 0.3,
            deadline=self.stop_at + FINISH_GRACE,
            rate=CLIENT_RATE,
            on_offset=seen,
        )

    async def _finish(self, http: httpx.AsyncClient, upload: ResilientUpload) -> None:
        await upload.run()
        upload.data = b""
        self.books.outcomes.append(upload.outcome)
        if upload.outcome.verified:
            await self._delete(http, upload.outcome.upload_id)

    async def _delete(self, http: httpx.AsyncClient, upload_id: str | None) -> None:
        self.books.live.pop(f"{upload_id}", None)
        for _ in range(10):
            try:
                response = await http.delete(
                    self.rng.choice(self.cluster.endpoints()) + f"{upload_id}", headers=TUS
                )
            except httpx.TransportError as exc:
                self.books.count("DELETE", type(exc).__name__)
                await asyncio.sleep(0.2)
                continue
            self.books.count("DELETE", response.status_code)
            if response.status_code in (204, 404):
                return
            await asyncio.sleep(0.2)

    async def uploader(self, http: httpx.AsyncClient, index: int) -> None:
        rng = random.Random(f"{self.seed}-uploader-{index}")
        number = 0
        while self.running():
            number += 1
            await self._finish(
                http, self._upload(http, f"u{index}-{number}", random_size(rng, LARGEST))
            )

    def _abort_patch(self, url: str, data: bytes, length: int, reset: bool) -> int:
        """A PATCH that sends `data` of a `length`-byte body and hangs up; the bytes it sent."""
        try:
            conn = RawHTTP(url, timeout=10)
        except OSError:
            return 0
        try:
            conn.send_head("PATCH", patch_headers(0, length))
            conn.send(data)
            if reset:  # RST instead of FIN
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            conn.close()
        return len(data)

    async def aborter(self, http: httpx.AsyncClient, index: int) -> None:
        rng = random.Random(f"{self.seed}-aborter-{index}")
        number = 0
        while self.running():
            number += 1
            size = rng.randint(64 * KiB, LARGEST)
            upload = self._upload(http, f"a{index}-{number}", size)
            try:
                created = await http.post(
                    rng.choice(self.cluster.endpoints()),
                    headers={**TUS, "Upload-Length": str(size)},
                )
            except httpx.TransportError as exc:
                self.books.count("POST (abort)", type(exc).__name__)
                await asyncio.sleep(0.2)
                continue
            self.books.count("POST (abort)", created.status_code)
            if created.status_code != 201:
                continue
            upload_id = created.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
            cut = rng.randint(0, size - 1)
            reset = rng.random() < 0.5
            url = rng.choice(self.cluster.endpoints()) + upload_id
            sent = await self.in_thread(self._abort_patch, url, upload.data[:cut], size, reset)
            self.books.aborted["reset" if reset else "closed"] += 1
            out = upload.outcome
            out.upload_id, out.created = upload_id, 1
            out.sent = out.sent_upto = sent  # the server may report at most these
            await self._finish(http, upload)

    async def _head(self, http: httpx.AsyncClient, instance: Instance, upload_id: str) -> None:
        kind = f"HEAD {instance.name}"
        try:
            response = await http.head(instance.endpoint + upload_id, headers=TUS)
        except httpx.TransportError as exc:
            self.books.count(kind, type(exc).__name__)
            return
        self.books.count(kind, response.status_code)

    async def head_storms(self) -> None:
        # A pool that keeps idle connections longer than the server's old keep-alive default.
        limits = httpx.Limits(
            max_connections=STORM_HEADS, max_keepalive_connections=STORM_HEADS, keepalive_expiry=30
        )
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30, connect=5)) as http:
            while self.running():
                await asyncio.sleep(STORM_EVERY)
                ids = list(self.books.live)[-100:]
                if not ids:
                    continue
                both = self.cluster.instances
                began = time.monotonic()
                await asyncio.gather(
                    *(self._head(http, both[i % 2], ids[i % len(ids)]) for i in range(STORM_HEADS))
                )
                self.books.storms_s.append(round(time.monotonic() - began, 2))

    def _slowloris_once(self, port: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            time.sleep(0.5)
            return
        with sock:
            try:
                sock.sendall(b"HEAD /files/x HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            except OSError:
                return
            answer, held = trickle(sock, b"a", 0.5, HEADER_TIMEOUT + 10)
        self.books.slowloris_held.append(held)
        self.books.slowloris_answers[str(answer.status)] += 1

    async def slowloris(self, index: int) -> None:
        while self.running():
            instance = self.cluster.instances[index % 2]
            await self.in_thread(self._slowloris_once, instance.port)

    async def chaos(self) -> None:
        rng = random.Random(f"{self.seed}-chaos")
        while True:
            pause = rng.uniform(*KILL_EVERY)
            if time.monotonic() + pause > self.stop_at - 5:
                return
            await asyncio.sleep(pause)
            self.victim.kill()
            await asyncio.sleep(rng.uniform(0.1, 1.5))
            await self.in_thread(self.victim.start)

    async def sampler(self) -> None:
        with redis_py.Redis.from_url(self.redis.url) as client:
            while self.running():
                for instance in self.cluster.instances:
                    process = instance.proc
                    if process is None or not instance.up:
                        continue
                    pid = process.proc.pid
                    try:
                        rss, fds = rss_bytes(pid), open_fds(pid)
                    except (OSError, AssertionError):
                        continue  # killed just now
                    self.books.sample(f"rss:{instance.name}", pid, rss)
                    self.books.sample(f"fds:{instance.name}", pid, fds)
                used = int(client.info("memory")["used_memory"])
                self.books.sample("redis", self.redis.proc.pid, used)
                await asyncio.sleep(SAMPLE_EVERY)

    async def run(self) -> None:
        async with http_client(read_timeout=30) as http:
            load = [
                *(self.uploader(http, i) for i in range(UPLOADERS)),
                *(self.aborter(http, i) for i in range(ABORTERS)),
                *(self.slowloris(i) for i in range(SLOWLORIS)),
                self.head_storms(),
                self.chaos(),
                self.sampler(),
            ]
            async with asyncio.timeout(DURATION + FINISH_GRACE + 60):
                await asyncio.gather(*load)
        self.threads.shutdown()


async def test_mixed_soak(redis: RedisServer, seed: int, tmp_path: Path) -> None:
    args = (*redis_args(redis), *ARGS)
    with running_cluster(["a", "b"], tmp_path / "uploads", args) as cluster:
        soak = Soak(cluster, redis, seed)
        await soak.run()
        duration = time.monotonic() - soak.books.started
        tracebacks = sum(i.output.count("Traceback") for i in cluster.instances)
        survivor_alive = soak.survivor.proc is not None and soak.survivor.proc.proc.poll() is None
    books = soak.books
    units = {"rss": MiB, "fds": 1, "redis": MiB}
    figures = {
        "seed": seed,
        "duration_s": round(duration, 1),
        "sample_every_s": SAMPLE_EVERY,
        "kills_of_b": cluster.kills,
        **summarize(books.outcomes),
        "aborted_patches": dict(books.aborted),
        "head_storms": len(books.storms_s),
        "head_storm_wall_s": {
            "median": statistics.median(books.storms_s) if books.storms_s else 0,
            "max": max(books.storms_s, default=0),
        },
        "statuses": {kind: dict(c) for kind, c in sorted(books.statuses.items())},
        "slowloris_cycles": len(books.slowloris_held),
        "slowloris_answers": dict(books.slowloris_answers),
        "slowloris_held_max_s": round(max(books.slowloris_held, default=0.0), 2),
        "files_left_on_disk": dict(left_on_disk(tmp_path / "uploads")),
        "tracebacks": tracebacks,
        "samples": {
            name: summary_of(samples, units[name.split(":")[0]])
            for name, samples in sorted(books.samples.items())
        },
        "units": "rss and redis in MiB, fds in descriptors",
    }
    record(f"mixed-soak-{'long' if SOAK else 'short'}", figures)

    problems = failures(books.outcomes)
    problems += [f"5xx: {line}" for line in books.five_xx()]
    problems += growth_problems(books)
    survivor_errors = {
        what: n for what, n in books.statuses.get("HEAD a", Counter()).items() if not what.isdigit()
    }
    if survivor_errors:
        problems.append(f"HEADs to the instance never killed failed: {survivor_errors}")
    if max(books.slowloris_held, default=0.0) > HEADER_TIMEOUT + 2:
        problems.append(f"a slowloris head was held {max(books.slowloris_held):.1f} s")
    if not survivor_alive or tracebacks:
        problems.append(f"survivor alive: {survivor_alive}; tracebacks: {tracebacks}")
    if not (cluster.kills and books.aborted and books.slowloris_held and books.storms_s):
        problems.append("the soak did not run all of its parts")
    assert not problems, "\n".join(problems)
