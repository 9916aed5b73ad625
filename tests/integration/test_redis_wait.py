"""`--redis-wait-replicas`: a creation or commit is acknowledged only once that many replicas
have it. Real redis-server processes: a primary alone (the WAIT times out: 503, counted, the
primary keeps the write) and a primary with a replica (the replica has the offset the moment
the commit returns)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tests.support.in_process import app_client
from tests.support.servers import RedisServer, redis_server, unique_prefix
from tusd_py.config import Config
from tusd_py.errors import TusError
from tusd_py.ids import new_upload_id
from tusd_py.info import UploadInfo
from tusd_py.locking.redis import RedisLocker
from tusd_py.redis_client import make_client, upload_key
from tusd_py.state.redis import RedisState
from tusd_py.stores.file import FileStore


def wait_timeouts() -> float:
    return REGISTRY.get_sample_value("tusd_redis_wait_timeouts_total") or 0.0


@pytest.fixture
async def store(tmp_path: Path) -> FileStore:
    s = FileStore(tmp_path / "uploads")
    await s.open()
    return s


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    with redis_server() as primary, redis_server() as replica:
        yield primary, replica


async def until_replicating(primary: Redis) -> None:
    for _ in range(200):
        info = await primary.info("replication")
        if info.get("slave0", {}).get("state") == "online":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the replica never came online")


@pytest.fixture
async def client(redis: RedisServer) -> AsyncIterator[Redis]:
    c = make_client(redis.url)
    assert isinstance(c, Redis)
    yield c
    await c.aclose()


async def test_a_wait_that_times_out_is_a_503_and_the_primary_keeps_the_write(
    client: Redis, store: FileStore
) -> None:
    prefix = unique_prefix()
    state = RedisState(client, prefix, store, wait_replicas=1, wait_timeout=0.2)
    info = UploadInfo(id=new_upload_id(), length=10)
    await store.create(info)
    before = wait_timeouts()
    with pytest.raises(TusError) as refused:
        await state.create(info)
    assert refused.value.status == 503
    assert "0 of 1 replicas confirmed it within 0.2s, so it is not acknowledged" in str(
        refused.value.message
    )
    assert wait_timeouts() == before + 1
    # Not rolled back: the client's HEAD finds it, on this primary.
    assert await client.hget(upload_key(prefix, info.id, "state"), "offset") == "0"


async def test_with_a_replica_the_offset_is_there_when_the_commit_returns(
    store: FileStore, primary_and_replica: tuple[RedisServer, RedisServer]
) -> None:
    primary, replica = primary_and_replica
    client = make_client(primary.url)
    assert isinstance(client, Redis)
    replica_client = make_client(replica.url)
    await replica_client.replicaof("127.0.0.1", primary.port)
    try:
        await until_replicating(client)
        prefix = unique_prefix()
        state = RedisState(client, prefix, store, wait_replicas=1, wait_timeout=5.0)
        locker = RedisLocker(client, prefix, lease=5.0, acquire_timeout=1.0)
        info = UploadInfo(id=new_upload_id(), length=1000)
        await store.create(info)
        await state.create(info)
        lock = await locker.acquire(info.id, lambda: None)
        before = wait_timeouts()
        key = upload_key(prefix, info.id, "state")
        for offset in (100, 500, 999):
            await state.commit(info, offset, lock)
            # Read from the replica at once: WAIT returned only once it had the write.
            assert await replica_client.hget(key, "offset") == str(offset)
        assert wait_timeouts() == before
        await lock.release()
        await locker.close()
    finally:
        await client.aclose()
        await replica_client.aclose()


async def test_a_creation_not_confirmed_in_time_answers_503_saying_so(
    redis: RedisServer, tmp_path: Path
) -> None:
    # The whole app: the client sees the 503 and why, with Retry-After, never a 201.
    config = Config(
        upload_dir=str(tmp_path / "uploads"),
        redis_url=redis.url,
        redis_prefix=unique_prefix(),
        redis_wait_replicas=1,
        redis_wait_timeout=0.2,
    )
    async with app_client(config) as client:
        created = await client.post(
            "/files/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "10"}
        )
        assert created.status_code == 503, created.text
        assert created.headers["Retry-After"] == "5"
        assert "0 of 1 replicas confirmed it within 0.2s" in created.text
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert "redis replicas: 0 connected, 0 in sync (waiting for 1 per commit)" in ready.text


async def test_a_retried_creation_is_the_same_creation_not_a_conflict(
    client: Redis, store: FileStore
) -> None:
    # redis-py resends a script whose reply was lost (a dropped connection, a failover): the
    # second run must not answer 409 for the upload the first run created.
    state = RedisState(client, unique_prefix(), store)
    info = UploadInfo(id=new_upload_id(), length=10)
    await store.create(info)
    await state.create(info)
    await state.create(info)
    other = UploadInfo(id=info.id, length=10, created_at=info.created_at + 1)
    with pytest.raises(TusError) as refused:
        await state.create(other)
    assert refused.value.status == 409
