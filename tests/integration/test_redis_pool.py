"""The Redis connection pool under load: commands wait for a connection instead of failing, a
pool that stays full answers 503 with Retry-After, and a failed lock release is retried."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.applications import Starlette

from tests.support.servers import RedisServer, unique_prefix
from tusd_py.app import create_app
from tusd_py.config import Config
from tusd_py.locking import redis as redis_locking
from tusd_py.locking.redis import RedisLocker
from tusd_py.redis_backends import build_redis_backends
from tusd_py.redis_client import PoolExhausted, WaitingPool, lock_key, make_client
from tusd_py.redis_connect import CountedConnection, client_for
from tusd_py.stores.file import FileStore

TUS = {"Tus-Resumable": "1.0.0"}
CREATE = {**TUS, "Upload-Length": "10"}


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@asynccontextmanager
async def serving(config: Config) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=60
        ) as client:
            yield app, client


def pool_of(app: Starlette) -> WaitingPool:
    pool = app.state.tus.state._client.connection_pool
    assert isinstance(pool, WaitingPool)
    return pool


def redis_config(redis: RedisServer, tmp_path: Path, **options: Any) -> Config:
    return Config(
        redis_url=redis.url,
        redis_prefix=unique_prefix(),
        upload_dir=str(tmp_path / "uploads"),
        **options,
    )


async def test_300_concurrent_heads_and_creations_wait_for_10_connections(
    redis: RedisServer, tmp_path: Path
) -> None:
    # Before the blocking pool: {200: 99, 503: 201} and {201: 99, 503: 201} with the default
    # pool of 100 ("Redis is unreachable: Too many connections").
    waits_before = sample("tusd_redis_pool_wait_seconds_count")
    quick_before = sample("tusd_redis_pool_wait_seconds_bucket", {"le": "0.001"})
    exhausted_before = sample("tusd_redis_pool_exhausted_total")
    config = redis_config(redis, tmp_path, redis_max_connections=10)
    async with serving(config) as (app, client):
        assert pool_of(app).max_connections == 10 + redis_locking.LISTENER_CONNECTIONS
        urls = []
        for _ in range(50):
            created = await client.post("/files/", headers=CREATE)
            assert created.status_code == 201, created.text
            urls.append(created.headers["Location"])

        heads = await asyncio.gather(*(client.head(urls[i % 50], headers=TUS) for i in range(300)))
        head_statuses = collections.Counter(r.status_code for r in heads)
        assert head_statuses == {200: 300}, head_statuses
        assert {r.headers["Upload-Offset"] for r in heads} == {"0"}

        creations = await asyncio.gather(
            *(client.post("/files/", headers=CREATE) for _ in range(300))
        )
        create_statuses = collections.Counter(r.status_code for r in creations)
        assert create_statuses == {201: 300}, (
            create_statuses,
            {r.text for r in creations if r.status_code != 201},
        )
        assert len({r.headers["Location"] for r in creations}) == 300

        # Every lock was handed back at once: a fresh HEAD of each upload needs no handover.
        after = await asyncio.gather(*(client.head(url, headers=TUS) for url in urls))
        assert {r.status_code for r in after} == {200}
        locks = await app.state.tus.state._client.exists(
            *(lock_key(config.redis_prefix, url.rsplit("/", 1)[-1]) for url in urls)
        )
        assert locks == 0

    waits = sample("tusd_redis_pool_wait_seconds_count") - waits_before
    quick = sample("tusd_redis_pool_wait_seconds_bucket", {"le": "0.001"}) - quick_before
    assert waits > 600
    assert waits - quick > 0, "300 requests on 10 connections should have queued"
    assert sample("tusd_redis_pool_exhausted_total") == exhausted_before


async def test_a_pool_that_stays_full_answers_503_with_retry_after(
    redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tusd_py.redis_client.POOL_WAIT", 0.2)
    exhausted_before = sample("tusd_redis_pool_exhausted_total")
    async with serving(redis_config(redis, tmp_path, redis_max_connections=2)) as (app, client):
        created = await client.post("/files/", headers=CREATE)
        assert created.status_code == 201, created.text
        url = created.headers["Location"]

        pool = pool_of(app)
        assert pool.wait == 0.2
        taken = []
        with pytest.raises(PoolExhausted):
            while True:
                taken.append(await pool.get_connection())
        assert len(taken) <= pool.max_connections
        try:
            head = await client.head(url, headers=TUS)
            assert head.status_code == 503
            assert head.headers["Retry-After"] == "1"
            create = await client.post("/files/", headers=CREATE)
            assert create.status_code == 503
            assert create.headers["Retry-After"] == "1"
            assert "Redis connection pool exhausted" in create.text
            assert "all 3 Redis connections stayed busy for 0.2s" in create.text
        finally:
            for connection in taken:
                await pool.release(connection)

        assert sample("tusd_redis_pool_exhausted_total") - exhausted_before >= 3
        head = await client.head(url, headers=TUS)
        assert head.status_code == 200
        assert (await client.post("/files/", headers=CREATE)).status_code == 201


@pytest.fixture
async def client(redis: RedisServer) -> AsyncIterator[Redis]:
    c = make_client(redis.url)
    assert isinstance(c, Redis)
    yield c
    await c.aclose()


def ignore() -> None:
    pass


class FailingFirst:
    """Stands in for the release script: raises `failures` connection errors, then runs it."""

    def __init__(self, script: Any, failures: int) -> None:
        self.script = script
        self.failures = failures
        self.calls = 0

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise RedisConnectionError("Connection closed by server.")
        return await self.script(**kwargs)


async def test_a_release_that_fails_once_is_retried_and_the_lock_is_free(
    client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = unique_prefix()
    locker = RedisLocker(client, prefix, lease=15.0, acquire_timeout=0.2)
    try:
        lock = await locker.acquire("u1", ignore)
        failing = FailingFirst(locker._release_script, failures=1)
        monkeypatch.setattr(locker, "_release_script", failing)
        await lock.release()
        assert failing.calls == 2
        assert await client.exists(lock_key(prefix, "u1")) == 0
        # Free right away, not after the 15 s lease: a short acquire timeout is enough.
        again = await locker.acquire("u1", ignore)
        await again.release()
    finally:
        await locker.close()


async def test_a_release_that_keeps_failing_gives_up_without_raising(
    client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_locking, "RELEASE_BACKOFF", 0.01)
    prefix = unique_prefix()
    locker = RedisLocker(client, prefix, lease=15.0, acquire_timeout=0.2)
    try:
        lock = await locker.acquire("u1", ignore)
        failing = FailingFirst(locker._release_script, failures=100)
        monkeypatch.setattr(locker, "_release_script", failing)
        await lock.release()  # never raises: the lease expires as after a crash
        assert failing.calls == redis_locking.RELEASE_ATTEMPTS
        assert await client.pttl(lock_key(prefix, "u1")) > 0
    finally:
        await locker.close()


async def test_every_redis_client_queues_for_connections(
    redis: RedisServer, tmp_path: Path
) -> None:
    tails = make_client(redis.url, decode=False)  # the S3 store's client for tails
    try:
        assert isinstance(tails, Redis)
        assert isinstance(tails.connection_pool, WaitingPool)
        assert await tails.get(f"{unique_prefix()}:missing") is None
    finally:
        await tails.aclose()

    store = FileStore(tmp_path / "uploads")
    config = Config(redis_url=redis.url, redis_prefix=unique_prefix(), redis_max_connections=7)
    state, locker = build_redis_backends(config, store)
    try:
        assert isinstance(state._client, Redis)
        pool = state._client.connection_pool
        assert isinstance(pool, WaitingPool)
        assert locker._client is state._client
        assert pool.max_connections == 7 + redis_locking.LISTENER_CONNECTIONS
    finally:
        await locker.close()
        await state.close()


async def test_an_idle_connection_is_reused_and_a_dropped_one_is_made_again(
    redis: RedisServer,
) -> None:
    """The pool's fast path hands back the idle connection it holds; one the server closed, or
    one with a reply nobody read, goes through redis-py's full path and is connected again."""
    client = client_for(Config(redis_url=redis.url, upload_dir="/nonexistent"))
    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert isinstance(pool, WaitingPool)
    try:
        await client.set("tusd-py-pool-key", "v")
        (first,) = pool._available_connections
        for _ in range(5):
            assert await client.get("tusd-py-pool-key") == "v"
        assert pool._available_connections == [first] and not pool._in_use_connections
        assert isinstance(first, CountedConnection)  # sends without a task per command

        reconnects = sample("tusd_redis_reconnects_total")
        await client.client_kill_filter(_id=str(await client.client_id()), skipme=False)
        await asyncio.sleep(0.1)  # the loop sees the server's close
        assert await client.get("tusd-py-pool-key") == "v"
        assert sample("tusd_redis_reconnects_total") == reconnects + 1

        await first.send_command("PING")  # a reply left unread...
        await asyncio.sleep(0.1)
        assert await client.get("tusd-py-pool-key") == "v"  # ...is not taken for this reply
    finally:
        await client.aclose()


async def test_a_full_pool_serves_commands_in_turn(redis: RedisServer) -> None:
    """While commands queue for a connection, a new one queues behind them instead of taking
    the connection each release frees (which starved the queue: lock renewals in it lost their
    leases with 1,000 uploads at once)."""
    client = make_client(redis.url, max_connections=2)
    stop = time.monotonic() + 2.0

    async def busy() -> None:
        while time.monotonic() < stop:
            await client.get("tusd-py-pool-busy")

    try:
        await client.ping()
        streams = [asyncio.create_task(busy()) for _ in range(50)]
        await asyncio.sleep(0.2)  # the pool full and its queue long
        started = time.monotonic()
        await client.get("tusd-py-pool-measured")
        waited = time.monotonic() - started
        await asyncio.gather(*streams)
        assert waited < 1.0, f"a queued command waited {waited:.2f}s behind newer ones"
    finally:
        await client.aclose()


async def test_a_command_larger_than_the_socket_takes_at_once_is_sent_whole(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-place write waits for the transport to drain only when it holds bytes back: a
    32 MiB value does, and arrives whole; the next command on the connection still works."""
    client = client_for(Config(redis_url=redis.url, upload_dir="/nonexistent"), decode=False)
    key = f"{unique_prefix()}:large"
    value = bytes(range(256)) * (32 * 1024 * 4)
    drains = 0
    drain = asyncio.StreamWriter.drain

    async def counted_drain(writer: asyncio.StreamWriter) -> None:
        nonlocal drains
        drains += 1
        await drain(writer)

    try:
        await client.ping()  # connected: the commands below take the in-place write
        monkeypatch.setattr(asyncio.StreamWriter, "drain", counted_drain)
        await client.get(key)
        assert drains == 0  # a small command: no wait for the transport
        await client.set(key, value)
        assert drains == 1
        assert await client.strlen(key) == len(value)
        assert await client.get(key) == value
    finally:
        await client.delete(key)
        await client.aclose()
