"""tusd-py on a real six-node Redis Cluster (`--redis-cluster`): lock handover between two
server processes, release requests that reach the holder only (on a Cluster and on one node),
a slot moved mid-upload, a primary killed with SIGKILL in the middle of uploads, and
`--redis-wait-replicas` (the WAIT counts the replicas of the upload's slot's primary; a primary
killed loses no acknowledged offset).

Every upload ends with a SHA-256 comparison of what the servers stored against what was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import RedisCluster
from redis.crc import key_slot

from tests.integration.redis_helpers import Upload, metric, upload
from tests.support.redis_cluster import ClusterNode, RedisClusterServers, redis_cluster
from tests.support.servers import RedisServer, unique_prefix
from tests.support.socket_http import RawHTTP, patch_headers, raw_create
from tests.support.tus_requests import TUS, download_sha256, head
from tests.support.tusd_process import TusdProcess
from tusd_py.errors import TusError
from tusd_py.ids import new_upload_id
from tusd_py.info import UploadInfo
from tusd_py.locking.redis import RedisLocker
from tusd_py.redis_client import PoolExhausted, WritesInPlace, make_client, upload_key
from tusd_py.state.redis import _COMMIT, RedisState
from tusd_py.stores.file import FileStore

MiB = 1024 * 1024

StartPair = Callable[..., tuple[TusdProcess, TusdProcess]]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(size * 31 + seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pair_on(
    servers: RedisClusterServers, upload_dir: Path, *extra: str
) -> tuple[TusdProcess, TusdProcess, str]:
    prefix = unique_prefix()
    args = ("--redis-url", servers.url, "--redis-cluster", "--redis-prefix", prefix, *extra)
    a = TusdProcess(upload_dir, args)
    try:
        b = TusdProcess(upload_dir, args)
    except BaseException:
        a.stop()
        raise
    return a, b, prefix


@pytest.fixture
def start_pair(redis_cluster: RedisClusterServers, tmp_path: Path) -> Iterator[StartPair]:
    """`start_pair(*extra_args)`: servers A and B on the session's Cluster and one directory."""
    started: list[TusdProcess] = []
    upload_dir = tmp_path / "uploads"
    upload_dir.mkdir()

    def start(*extra_args: str) -> tuple[TusdProcess, TusdProcess]:
        a, b, _ = pair_on(redis_cluster, upload_dir, *extra_args)
        started.extend((a, b))
        return a, b

    try:
        yield start
    finally:
        report(started)


def report(servers: list[TusdProcess]) -> None:
    for server in servers:
        server.stop()
        print(f"--- output of {' '.join(server.args[1:])} (exit {server.proc.returncode})")
        print(server.output)


def offset_of(url: str) -> int:
    response = head(url)
    assert response.status_code in (200, 204), f"HEAD {url}: {response.status_code} {response.text}"
    return int(response.headers["Upload-Offset"])


def test_a_patch_on_b_takes_over_an_upload_whose_patch_stalls_on_a(start_pair: StartPair) -> None:
    a, b = start_pair()
    assert httpx.get(b.endpoint.replace("/files/", "/ready"), timeout=10).status_code == 200
    data = payload(2 * MiB)
    sent = 1536 * 1024
    url = raw_create(a.endpoint, len(data))

    with RawHTTP(url, timeout=15) as stalled:
        # Headers and part of the body, then silence: the client gave up on this connection
        # and resumes through another instance, from the bytes it sent.
        stalled.send_head("PATCH", patch_headers(0, len(data)))
        stalled.send(data[:sent])
        time.sleep(0.5)  # let A read what was sent

        started = time.monotonic()
        response = httpx.patch(
            b.url_for(url),
            content=data[sent:],
            headers={
                **TUS,
                "Upload-Offset": str(sent),
                "Content-Type": "application/offset+octet-stream",
            },
            timeout=30,
        )
        took = time.monotonic() - started
        assert response.status_code == 204, response.text
        assert response.headers["Upload-Offset"] == str(len(data))
        assert took < 5.0, f"the PATCH on B waited {took:.2f}s for A's lock"

        answer = stalled.read_response()  # A stopped reading, committed and answered
        assert answer.status == 204
        assert answer.headers["upload-offset"] == str(sent)

    expected = (len(data), sha256(data))
    assert download_sha256(a.url_for(url)) == expected
    assert download_sha256(b.url_for(url)) == expected
    assert sha256((a.upload_dir / url.rsplit("/", 1)[-1]).read_bytes()) == expected[1]


# -- release requests reach the holder only ---------------------------------------------------


@pytest.fixture(params=["cluster", "single"])
def redis_target(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """(URL, is a Cluster): the session's Cluster or its single redis-server."""
    if request.param == "cluster":
        servers: RedisClusterServers = request.getfixturevalue("redis_cluster")
        return servers.url, True
    server: RedisServer = request.getfixturevalue("redis")
    return server.url, False


async def test_a_release_request_reaches_the_holder_and_no_other_instance(
    redis_target: tuple[str, bool], request: pytest.FixtureRequest
) -> None:
    url, cluster = redis_target
    prefix = unique_prefix()
    clients = [make_client(url, cluster=cluster) for _ in range(3)]
    lockers = [
        RedisLocker(c, prefix, lease=5.0, acquire_timeout=10.0, on_close=c.aclose) for c in clients
    ]
    holder, waiter, bystander = lockers
    heard: dict[str, list[str]] = {locker.instance: [] for locker in lockers}
    for locker in lockers:
        original = locker._dispatch

        def recording(message: str, locker: RedisLocker = locker, original=original) -> None:  # type: ignore[no-untyped-def]
            heard[locker.instance].append(message)
            original(message)

        locker._dispatch = recording  # type: ignore[method-assign]
    try:
        for locker in lockers:
            await locker.open()
        asked = asyncio.Event()
        lock = await holder.acquire("u1", asked.set)

        async def hand_over() -> None:
            await asked.wait()
            await lock.release()

        handing = asyncio.create_task(hand_over())
        started = time.monotonic()
        taken = await waiter.acquire("u1", lambda: None)
        assert time.monotonic() - started < 3.0
        await handing
        await taken.release()

        assert heard[holder.instance] == [f"release u1 {lock.token}"]
        assert heard[waiter.instance] == ["free u1"]
        assert heard[bystander.instance] == []

        # One channel per instance, and no channel that every instance hears.
        channels = {locker.channel for locker in lockers}
        assert len(channels) == 3
        if cluster:
            servers: RedisClusterServers = request.getfixturevalue("redis_cluster")
            sharded, plain = set(), set()
            for node in servers.running():
                with node.client() as client:
                    sharded |= set(client.execute_command("PUBSUB", "SHARDCHANNELS", f"{prefix}:*"))
                    plain |= set(client.execute_command("PUBSUB", "CHANNELS", f"{prefix}:*"))
            assert sharded == channels
            assert plain == set()
        else:
            client = make_client(url)
            try:
                assert set(await client.pubsub_channels(f"{prefix}:*")) == channels
            finally:
                await client.aclose()
    finally:
        for locker in lockers:
            await locker.close()


# -- resharding: ASK and MOVED ---------------------------------------------------------------


@pytest.mark.parametrize("wait", ["0", "1"])
def test_an_upload_whose_slot_moves_mid_upload_follows_ask_and_moved(
    redis_cluster: RedisClusterServers, tmp_path: Path, wait: str
) -> None:
    upload_dir = tmp_path / "uploads"
    upload_dir.mkdir()
    # With a WAIT the commits take the other road (redis_slot.run_on_slot): ASKING, the
    # script and the WAIT on one connection of the target.
    a, b, prefix = pair_on(redis_cluster, upload_dir, "--redis-wait-replicas", wait)
    try:
        data = payload(4 * MiB, seed=7)
        url = raw_create(a.endpoint, len(data))
        upload = ResumingUpload([a.endpoint, b.endpoint], url, data, chunk=128 * 1024)
        slot = key_slot(upload_key(prefix, upload.upload_id, "state").encode())
        source = redis_cluster.primary_of_slot(slot)
        target = next(n for n in redis_cluster.primaries() if n is not source)
        thread = threading.Thread(target=upload.run, args=(time.monotonic() + 60,))
        thread.start()
        while upload.offset < MiB:
            time.sleep(0.01)
        answered_before = len(upload.statuses)
        moved = redis_cluster.migrate_slot(slot, target, pause=0.5)
        answered_while_moving = len(upload.statuses) - answered_before
        thread.join(60)
        assert moved >= 1
        assert redis_cluster.primary_of_slot(slot) is target
        assert upload.error is None, upload.error
        # While the slot migrates, ASK is followed (ASKING and the command on one connection of
        # the target: redis_slot.py), and MOVED once it has moved: the client never notices.
        assert set(upload.statuses) == {204}, (answered_while_moving, upload.statuses)
        expected = (len(data), sha256(data))
        assert download_sha256(b.url_for(url)) == expected
        assert sha256((upload_dir / upload.upload_id).read_bytes()) == expected[1]
    finally:
        report([a, b])


async def test_ask_sends_asking_and_the_command_on_one_connection(
    redis_cluster: RedisClusterServers,
) -> None:
    prefix = unique_prefix()
    key = f"{prefix}:{{moving}}:state"
    slot = key_slot(key.encode())
    source = redis_cluster.primary_of_slot(slot)
    target = next(n for n in redis_cluster.primaries() if n is not source)
    client = make_client(redis_cluster.url, cluster=True)
    try:
        await client.set(key, "here")
        # Several free connections to the target: redis-py's own ASK path takes one for ASKING
        # and another for the command, which the target then answers with MOVED.
        local = next(
            k for i in range(1000) if redis_cluster.primary_of(k := f"{prefix}:{{t{i}}}") is target
        )
        await asyncio.gather(*(client.get(local) for _ in range(4)))
        assert redis_cluster.start_migration(slot, target) == 1
        try:
            # The key is on the target, the slot still on the source: ASK.
            assert await asyncio.gather(*(client.get(key) for _ in range(3))) == ["here"] * 3
            assert await client.hset(f"{prefix}:{{moving}}:other", "f", "v") == 1
        finally:
            redis_cluster.finish_migration(slot, target)
        assert await client.get(key) == "here"  # MOVED, then the new owner
    finally:
        await client.aclose()


# -- a primary killed mid-upload --------------------------------------------------------------


class ResumingUpload:
    """A tus client that PATCHes `data` in chunks through alternating instances and resumes
    after any failure (5xx, 409, 423, a dropped connection) from the offset a HEAD reports, as
    tus clients do; it keeps the status of every answer."""

    def __init__(self, endpoints: list[str], url: str, data: bytes, chunk: int) -> None:
        self.endpoints = endpoints
        self.upload_id = url.rstrip("/").rsplit("/", 1)[-1]
        self.data = data
        self.chunk = chunk
        self.offset = 0
        self.statuses: list[int | str] = []
        self.error: str | None = None

    def url(self, turn: int) -> str:
        return self.endpoints[turn % len(self.endpoints)] + self.upload_id

    def run(self, deadline: float) -> None:
        turn = 0
        try:
            while self.offset < len(self.data):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stuck at {self.offset}: {self.statuses[-20:]}")
                turn += 1
                if self._patch(self.url(turn)):
                    continue
                time.sleep(0.2)
                self._resync(self.url(turn + 1), deadline)
        except Exception as exc:  # reported by the test
            self.error = repr(exc)

    def _patch(self, url: str) -> bool:
        body = self.data[self.offset : self.offset + self.chunk]
        headers = {
            **TUS,
            "Upload-Offset": str(self.offset),
            "Content-Type": "application/offset+octet-stream",
        }
        try:
            response = httpx.patch(url, content=body, headers=headers, timeout=20)
        except httpx.TransportError as exc:
            self.statuses.append(type(exc).__name__)
            return False
        self.statuses.append(response.status_code)
        if response.status_code == 204:
            self.offset = int(response.headers["Upload-Offset"])
            return True
        return False

    def _resync(self, url: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                response = httpx.head(url, headers=TUS, timeout=20)
            except httpx.TransportError as exc:
                self.statuses.append(f"HEAD {type(exc).__name__}")
            else:
                if response.status_code == 200:
                    self.offset = int(response.headers["Upload-Offset"])
                    return
                self.statuses.append(f"HEAD {response.status_code}")
            time.sleep(0.2)


def test_a_primary_killed_mid_upload_is_replaced_and_every_upload_completes(
    tmp_path: Path,
) -> None:
    upload_dir = tmp_path / "uploads"
    upload_dir.mkdir()
    # A Cluster of its own: this test leaves one node dead.
    with redis_cluster() as servers:
        a, b, prefix = pair_on(servers, upload_dir, "--lock-lease", "3s")
        try:
            endpoints = [a.endpoint, b.endpoint]
            uploads = []
            for i in range(6):
                data = payload(6 * MiB, seed=i)
                url = raw_create(endpoints[i % 2], len(data))
                uploads.append(ResumingUpload(endpoints, url, data, chunk=512 * 1024))
            victim = servers.primary_of(upload_key(prefix, uploads[0].upload_id, "state"))
            deadline = time.monotonic() + 120
            threads = [threading.Thread(target=u.run, args=(deadline,)) for u in uploads]
            for thread in threads:
                thread.start()
            while uploads[0].offset < 2 * MiB and time.monotonic() < deadline:
                time.sleep(0.02)
            assert uploads[0].offset < len(uploads[0].data), "finished before the kill"
            servers.kill(victim)
            killed_at = time.monotonic()
            for thread in threads:
                thread.join(max(1.0, deadline - time.monotonic()))
            recovered = time.monotonic() - killed_at
            servers.wait_ok()
            # The promoted replica had none of the scripts (Redis 7 does not replicate SCRIPT
            # LOAD): the commits there went through NOSCRIPT, a reload and a repeat.
            successor = servers.primary_of(upload_key(prefix, uploads[0].upload_id, "state"))
            assert successor is not victim
            with successor.client() as client:
                assert client.script_exists(hashlib.sha1(_COMMIT.encode()).hexdigest()) == [True]

            for upload in uploads:
                assert upload.error is None, upload.error
                assert 500 not in upload.statuses, upload.statuses
                assert "HEAD 500" not in upload.statuses, upload.statuses
                expected = (len(upload.data), sha256(upload.data))
                for endpoint in endpoints:
                    assert download_sha256(endpoint + upload.upload_id) == expected
                assert sha256((upload_dir / upload.upload_id).read_bytes()) == expected[1]
            failures = [s for u in uploads for s in u.statuses if s != 204]
            print(f"all uploads done {recovered:.1f}s after the kill; non-204 answers: {failures}")
        finally:
            report([a, b])


# -- the connection budget ----------------------------------------------------------------------


async def test_cluster_commands_queue_for_a_connection_then_fail_as_pool_exhausted(
    redis_cluster: RedisClusterServers,
) -> None:
    client = make_client(redis_cluster.url, cluster=True, max_connections=2, pool_wait=0.3)
    prefix = unique_prefix()
    try:
        assert isinstance(client, RedisCluster)
        await client.ping()
        # 20 commands at once through 2 connections: they queue, none fails.
        await asyncio.gather(*(client.set(f"{prefix}:{{k{i}}}", i) for i in range(20)))
        # Two commands that hold their connection for a second: the third waits 0.3 s, then
        # gives up the way the single-endpoint pool does.
        # redis-py types the Cluster's blpop as a mere Awaitable; it is a coroutine.
        held = [
            asyncio.create_task(
                cast(Coroutine[Any, Any, object], client.blpop([f"{prefix}:{{empty{i}}}"], 1))
            )
            for i in (1, 2)
        ]
        await asyncio.sleep(0.1)
        with pytest.raises(PoolExhausted, match=r"all 2 Redis connections stayed busy for 0\.3s"):
            await client.get(f"{prefix}:{{k0}}")
        await asyncio.gather(*held)
        assert await client.get(f"{prefix}:{{k0}}") == "0"
        # Every node's connections write in place, the discovered nodes' as the first one's.
        nodes = client.get_nodes()
        assert len(nodes) >= 3
        assert all(issubclass(node.connection_class, WritesInPlace) for node in nodes)
    finally:
        await client.aclose()


# -- --redis-wait-replicas: WAIT on the connection of the slot's primary -----------------------


def wait_timeouts() -> float:
    return REGISTRY.get_sample_value("tusd_redis_wait_timeouts_total") or 0.0


def wait_calls(servers: RedisClusterServers) -> int:
    """WAIT commands the primaries have run."""
    calls = 0
    for node in servers.primaries():
        with node.client() as client:
            calls += int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    return calls


async def test_a_commit_waits_for_the_replica_of_its_own_slots_primary(
    redis_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    client = make_client(redis_cluster.url, cluster=True)
    prefix = unique_prefix()
    store = FileStore(tmp_path / "uploads")
    await store.open()
    state = RedisState(client, prefix, store, wait_replicas=1, wait_timeout=0.3)
    locker = RedisLocker(client, prefix, lease=5.0, acquire_timeout=1.0)
    # Two uploads whose slots have different primaries.
    mine = UploadInfo(id=new_upload_id(), length=1000)
    primary = redis_cluster.primary_of(upload_key(prefix, mine.id, "state"))
    other = UploadInfo(id=new_upload_id(), length=1000)
    while redis_cluster.primary_of(upload_key(prefix, other.id, "state")) is primary:
        other = UploadInfo(id=new_upload_id(), length=1000)
    (replica,) = redis_cluster.replicas_of(primary)
    assert replica.proc is not None
    try:
        locks = {}
        for info in (mine, other):
            await store.create(info)
            await state.create(info)
            locks[info.id] = await locker.acquire(info.id, lambda: None)
        before = wait_timeouts()
        await state.commit(mine, 100, locks[mine.id])
        with replica.client() as read:
            read.execute_command("READONLY")
            # WAIT returned only once this replica had the write.
            assert read.hget(upload_key(prefix, mine.id, "state"), "offset") == "100"
        assert wait_timeouts() == before

        # The replica of `mine`'s primary stops: its commit is not acknowledged. A WAIT on any
        # other connection or node would have returned at once and acknowledged it.
        replica.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(TusError) as refused:
                await state.commit(mine, 200, locks[mine.id])
            await state.commit(other, 200, locks[other.id])  # its own replica answers
        finally:
            replica.proc.send_signal(signal.SIGCONT)
        assert refused.value.status == 503
        assert "0 of 1 replicas confirmed it within 0.3s" in str(refused.value.message)
        assert wait_timeouts() == before + 1
        for lock in locks.values():
            await lock.release()
    finally:
        await locker.close()
        await client.aclose()


def test_uploads_through_two_instances_are_acknowledged_by_a_replica(
    redis_cluster: RedisClusterServers, start_pair: StartPair
) -> None:
    a, b = start_pair("--redis-wait-replicas", "1", "--redis-wait-timeout", "2s")
    servers = [a, b]
    items = [Upload(payload(2 * MiB, seed=i)) for i in range(4)]
    waits_before = wait_calls(redis_cluster)

    async def run() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(
                *(upload(client, servers, item, chunk_size=256 * 1024, pause=0) for item in items)
            )

    asyncio.run(run())
    for item in items:
        assert item.failures == [], item.failures
        assert download_sha256(item.url) == (len(item.data), sha256(item.data))
    # One WAIT per creation and per commit at least, and every one confirmed in time.
    patches = len(items) * 8
    assert wait_calls(redis_cluster) - waits_before >= len(items) + patches
    assert [metric(s, "tusd_redis_wait_timeouts_total") for s in servers] == [0.0, 0.0]


def test_a_primary_killed_with_wait_replicas_loses_no_acknowledged_offset(
    tmp_path: Path,
) -> None:
    upload_dir = tmp_path / "uploads"
    upload_dir.mkdir()
    # A Cluster of its own, with a spare replica: the killed primary's replica is promoted
    # alone, every commit of its slots answers 503 (nobody to WAIT for) until the spare has
    # migrated to it and synced (docs/redis.md, hazards).
    with redis_cluster(spare_replicas=1) as servers:
        a, b, prefix = pair_on(
            servers, upload_dir,
            "--redis-wait-replicas", "1", "--redis-wait-timeout", "1s",
            "--lock-lease", "3s", "--log-level", "warning",
        )  # fmt: skip
        try:
            instances = [a, b]
            victim = next(p for p in servers.primaries() if len(servers.replicas_of(p)) == 1)

            def on_victim(url: str) -> bool:
                upload_id = url.rstrip("/").rsplit("/", 1)[-1]
                return servers.primary_of(upload_key(prefix, upload_id, "state")) is victim

            urls: dict[bool, list[str]] = {True: [], False: []}
            while len(urls[True]) < 2 or len(urls[False]) < 2:
                url = raw_create(a.endpoint, 8 * MiB)
                if len(urls[on_victim(url)]) < 2:
                    urls[on_victim(url)].append(url)
            items = [
                Upload(payload(8 * MiB, seed=i), url=url)
                for i, url in enumerate(urls[True] + urls[False])
            ]
            killed_at = asyncio.run(kill_during(servers, victim, instances, items))
            servers.wait_ok()
            successor = servers.primary_of_slot(
                key_slot(upload_key(prefix, items[0].url.rsplit("/", 1)[-1], "state").encode())
            )
            assert successor is not victim
            assert servers.replicas_of(successor), "the spare replica never migrated"

            for item in items:
                assert not item.regressions, (item.url, item.regressions)
                assert not [
                    f
                    for _, f in item.failures
                    if f.startswith(("PATCH 5", "HEAD 5"))
                    and not f.startswith(("PATCH 503", "HEAD 503"))
                ], item.failures
                assert download_sha256(item.url) == (len(item.data), sha256(item.data))
            # The promoted replica had nobody to WAIT for: its commits said so (503), and
            # were not acknowledged, rather than claiming an offset that one more failure
            # would lose.
            unconfirmed = [
                at for item in items[:2] for at, f in item.failures if "replicas confirmed" in f
            ]
            assert unconfirmed, [item.failures for item in items[:2]]
            assert sum(metric(s, "tusd_redis_wait_timeouts_total") for s in instances) >= 1
            recovered = max(item.finished_at for item in items) - killed_at
            print(
                f"\nkilled {victim.address}: {len(items)}/{len(items)} uploads complete, "
                f"{len(unconfirmed)} commits not acknowledged (503), the last "
                f"{max(unconfirmed) - killed_at:.1f}s after the kill, "
                f"{sum(len(i.failures) for i in items)} failed requests, "
                f"{sum(i.resent for i in items) / MiB:.1f} MiB re-sent, last upload done "
                f"{recovered:.1f}s after the kill, 0 HEADs below an offset given"
            )
        finally:
            report([a, b])


async def kill_during(
    servers: RedisClusterServers, victim: ClusterNode, instances: list[TusdProcess],
    items: list[Upload],
) -> float:  # fmt: skip
    """Uploads `items` (the first two on `victim`'s slots), kills `victim` once those have
    some offset acknowledged; returns when the kill happened."""
    async with httpx.AsyncClient(timeout=30) as client:
        tasks = [
            asyncio.create_task(
                upload(client, instances, item, chunk_size=512 * 1024, pause=0.1, within=150)
            )
            for item in items
        ]
        while min(item.given for item in items[:2]) < MiB:
            assert not any(t.done() for t in tasks[:2]), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.02)
        servers.kill(victim)
        killed_at = time.monotonic()
        await asyncio.gather(*tasks)
    return killed_at
