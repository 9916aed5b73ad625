"""RedisState against a real redis-server: commit point, token checks, rebuild, TTLs, outages."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.integration.redis_helpers import CommandCounter
from tests.support.payloads import heavy_metadata
from tests.support.servers import RedisServer, redis_down, unique_prefix
from tusd_py.config import Config
from tusd_py.errors import TusError
from tusd_py.ids import new_upload_id
from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock
from tusd_py.locking.redis import RedisLocker
from tusd_py.protocol.context import is_expired
from tusd_py.redis_backends import build_redis_backends
from tusd_py.redis_client import make_client, upload_key
from tusd_py.state.redis import RedisState
from tusd_py.stores.file import FileStore

FINISHED_TTL = 60.0
EXPIRED_TTL = 30.0


@pytest.fixture
async def client(redis: RedisServer) -> AsyncIterator[Redis]:
    c = make_client(redis.url)
    assert isinstance(c, Redis)
    yield c
    await c.aclose()


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
async def store(tmp_path: Path) -> FileStore:
    s = FileStore(tmp_path / "uploads")
    await s.open()
    return s


@pytest.fixture
async def state(client: Redis, prefix: str, store: FileStore) -> AsyncIterator[RedisState]:
    s = RedisState(client, prefix, store, finished_ttl=FINISHED_TTL, expired_ttl=EXPIRED_TTL)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def locker(client: Redis, prefix: str) -> AsyncIterator[RedisLocker]:
    lk = RedisLocker(client, prefix, lease=1.0, acquire_timeout=1.0)
    yield lk
    await lk.close()


async def new_upload(
    store: FileStore, state: RedisState, length: int | None = 10, **fields: object
) -> UploadInfo:
    info = UploadInfo(id=new_upload_id(), length=length, **fields)  # type: ignore[arg-type]
    await store.create(info)
    await state.create(info)
    return info


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def ignore() -> None:
    pass


class ForeignLock(Lock):
    """A lock that believes it is valid but whose token Redis does not hold."""

    def __init__(self, upload_id: str, token: str = "not-the-holder") -> None:
        self.upload_id = upload_id
        self.token = token

    @property
    def valid(self) -> bool:
        return True

    async def release(self) -> None:
        pass


async def test_create_and_get_round_trip(state: RedisState, store: FileStore) -> None:
    info = await new_upload(
        store,
        state,
        length=None,
        metadata={"filename": "a b.txt"},
        metadata_header="filename YSBiLnR4dA==",
        expires_at=time.time() + 3600,
        concat="partial",
        storage={"path": "/x", "n": 3},
    )
    got = await state.get(info.id)
    assert got == info
    assert got is not info


async def test_get_unknown_upload_is_none_and_writes_nothing(
    state: RedisState, client: Redis, prefix: str
) -> None:
    assert await state.get("unknown123") is None
    assert await client.keys(f"{prefix}:*") == []


async def test_commit_moves_forward_only(
    state: RedisState, store: FileStore, locker: RedisLocker
) -> None:
    info = await new_upload(store, state)
    lock = await locker.acquire(info.id, ignore)
    await state.commit(info, 4, lock)
    assert info.offset == 4
    await state.commit(info, 4, lock)  # same offset again (a retried call) is fine
    with pytest.raises(TusError) as err:
        await state.commit(info, 3, lock)
    assert err.value.status == 409
    assert err.value.headers["Upload-Offset"] == "4"
    got = await state.get(info.id)
    assert got is not None and got.offset == 4
    await state.commit(info, 7, lock)
    got = await state.get(info.id)
    assert got is not None and got.offset == 7
    await lock.release()


async def test_commit_is_one_round_trip(
    client: Redis, state: RedisState, store: FileStore, locker: RedisLocker
) -> None:
    info = await new_upload(store, state)
    lock = await locker.acquire(info.id, ignore)
    await state.commit(info, 1, lock)  # loads the script once
    counter = CommandCounter(client)
    await state.commit(info, 2, lock)
    await state.commit(info, 5, lock)
    assert counter.commands == ["EVALSHA", "EVALSHA"]
    counter.commands.clear()
    await state.get(info.id)
    assert counter.commands == ["HMGET"]
    await lock.release()


async def test_create_held_writes_the_state_and_takes_the_lock_in_one_step(
    client: Redis, state: RedisState, store: FileStore, locker: RedisLocker, prefix: str
) -> None:
    info = UploadInfo(id=new_upload_id(), length=10)
    await store.create(info)
    counter = CommandCounter(client)
    lock = await state.create_held(info, locker, ignore)
    assert counter.commands == ["EVALSHA"]
    assert lock.valid and await locker.holder(info.id) == lock.token
    got = await state.get(info.id)
    assert got == info
    await state.commit_and_release(info, 4, lock)
    assert await locker.holder(info.id) is None

    # The id exists (a pre-create hook chose it): 409, and neither state nor lock is touched.
    again = UploadInfo(id=info.id, length=99)
    with pytest.raises(TusError) as err:
        await state.create_held(again, locker, ignore)
    assert err.value.status == 409
    assert await locker.holder(info.id) is None
    got = await state.get(info.id)
    assert got is not None and got.length == 10 and got.offset == 4

    # A lock without state (held by a request that is rebuilding it) refuses the creation too.
    other = UploadInfo(id=new_upload_id(), length=10)
    held_lock = await locker.acquire(other.id, ignore)
    with pytest.raises(TusError) as err:
        await state.create_held(other, locker, ignore)
    assert err.value.status == 409
    assert await locker.holder(other.id) == held_lock.token
    assert await client.exists(upload_key(prefix, other.id, "state")) == 0
    await held_lock.release()


async def test_foreign_token_cannot_move_the_offset(
    state: RedisState, store: FileStore, locker: RedisLocker
) -> None:
    info = await new_upload(store, state)
    lock = await locker.acquire(info.id, ignore)
    await state.commit(info, 2, lock)
    with pytest.raises(TusError) as err:
        await state.commit(info, 9, ForeignLock(info.id))
    assert (err.value.status, err.value.code) == (409, "lock-lost")
    with pytest.raises(TusError):
        await state.update(info, ForeignLock(info.id))
    got = await state.get(info.id)
    assert got is not None and got.offset == 2
    await lock.release()
    # Released: the old token is worthless even to the object that held it.
    with pytest.raises(TusError) as err:
        await state.commit(info, 9, lock)
    assert err.value.code == "lock-lost"


async def test_expired_lease_cannot_move_the_offset(
    redis: RedisServer, state: RedisState, store: FileStore, prefix: str
) -> None:
    info = await new_upload(store, state)
    crashed = RedisLocker(redis.url, prefix, lease=0.3, acquire_timeout=1.0)
    other = RedisLocker(redis.url, prefix, lease=5.0, acquire_timeout=2.0)
    try:
        stale = await crashed.acquire(info.id, ignore)
        await state.commit(info, 3, stale)
        await crashed.close()  # renewal stops, nothing is released: as if the process froze
        new = await other.acquire(info.id, ignore)
        await state.commit(info, 5, new)
        with pytest.raises(TusError) as err:
            await state.commit(info, 8, stale)
        assert err.value.code == "lock-lost"
        # Even when the stale holder does not know its lease ended (token checked in Redis).
        with pytest.raises(TusError):
            await state.commit(info, 8, ForeignLock(info.id, stale.token))
        got = await state.get(info.id)
        assert got is not None and got.offset == 5
        await new.release()
    finally:
        await crashed.close()
        await other.close()


async def test_update_keeps_offset_and_saves_the_storage_copy(
    state: RedisState, store: FileStore, locker: RedisLocker
) -> None:
    info = await new_upload(store, state, length=None)
    lock = await locker.acquire(info.id, ignore)
    await state.commit(info, 6, lock)
    stale_view = await state.get(info.id)
    assert stale_view is not None
    stale_view.offset = 0  # update must not write this offset
    stale_view.length = 20
    stale_view.storage["extra"] = "yes"
    await state.update(stale_view, lock)
    assert stale_view.offset == 6
    got = await state.get(info.id)
    assert got is not None
    assert (got.offset, got.length, got.storage["extra"]) == (6, 20, "yes")
    on_disk = await store.load_info(info.id)
    assert on_disk is not None and on_disk.length == 20
    await lock.release()
    await state.update(got, None)  # unchecked update (no lock) is allowed


async def written(
    store: FileStore, state: RedisState, info: UploadInfo, lock: Lock, *data: bytes
) -> int:
    """A PATCH's write as the protocol layer does it: the store commits as it goes, the caller
    commits what it returned."""
    end = await store.write(info, chunks(*data), lambda off: state.commit(info, off, lock))
    if end > info.offset:
        await state.commit(info, end, lock)
    return end


async def test_rebuild_from_the_data_store(
    state: RedisState, store: FileStore, locker: RedisLocker, client: Redis, prefix: str
) -> None:
    info = await new_upload(store, state, length=10, metadata={"k": "v"}, metadata_header="k dg==")
    lock = await locker.acquire(info.id, ignore)

    assert await written(store, state, info, lock, b"abc", b"def") == 6
    await lock.release()
    key = upload_key(prefix, info.id, "state")
    assert await client.delete(key) == 1

    got = await state.get(info.id)
    assert got is not None
    assert (got.offset, got.length, got.metadata, got.metadata_header) == (
        6,
        10,
        {"k": "v"},
        "k dg==",
    )
    # Written back: the next get is served from Redis alone.
    assert await client.hget(key, "offset") == "6"

    # Stored bytes are the truth even when the .info copy says otherwise.
    await store.save_info(UploadInfo(id=info.id, length=10, offset=1))
    await client.delete(key)
    got = await state.get(info.id)
    assert got is not None and got.offset == 6


async def test_rebuild_after_state_lost_mid_upload_lets_the_upload_continue(
    state: RedisState, store: FileStore, locker: RedisLocker, client: Redis, prefix: str
) -> None:
    info = await new_upload(store, state, length=6)
    lock = await locker.acquire(info.id, ignore)
    await written(store, state, info, lock, b"abc")
    await client.delete(upload_key(prefix, info.id, "state"))
    # The holder's next commit rewrites the whole state, still token-checked.
    await written(store, state, info, lock, b"def")
    got = await state.get(info.id)
    assert got is not None and got.offset == 6 and got.finished
    await lock.release()


async def test_rebuild_counts_the_expiry_from_the_last_write(
    client: Redis, prefix: str, store: FileStore, locker: RedisLocker
) -> None:
    """Each PATCH moves the expiry in Redis only; the `.info` copy keeps its creation's. A state
    rebuilt after Redis lost it must not answer 410 for an upload written to a moment ago, nor
    revive one abandoned long ago."""
    state = RedisState(client, prefix, store, expiration=100.0)
    await state.open()
    stale = time.time() - 5  # the creation's expiry, long ago
    active = await new_upload(store, state, length=10, expires_at=stale)
    lock = await locker.acquire(active.id, ignore)
    active.expires_at = time.time() + 100  # as every PATCH does (protocol/uploads.py `append`)
    await written(store, state, active, lock, b"abc")
    await lock.release()
    on_disk = await store.load_info(active.id)
    assert on_disk is not None and on_disk.expires_at == pytest.approx(stale)

    abandoned = await new_upload(store, state, length=10, expires_at=stale)
    long_ago = time.time() - 200
    os.utime(store.directory / abandoned.id, (long_ago, long_ago))

    for upload in (active, abandoned):
        assert await client.delete(upload_key(prefix, upload.id, "state")) == 1
    got = await state.get(active.id)
    assert got is not None and got.offset == 3
    # (The file system's clock is coarse: an mtime may trail time.time() by a tick.)
    assert got.expires_at is not None and got.expires_at >= active.expires_at - 1
    assert not is_expired(got)
    got = await state.get(abandoned.id)
    assert got is not None and got.expires_at == pytest.approx(stale) and is_expired(got)
    await state.close()


async def test_ttls(
    state: RedisState, store: FileStore, locker: RedisLocker, client: Redis, prefix: str
) -> None:
    plain = await new_upload(store, state, length=4)
    key = upload_key(prefix, plain.id, "state")
    assert await client.pttl(key) == -1  # unfinished, never expires: kept

    expires_at = time.time() + 100
    expiring = await new_upload(store, state, length=4, expires_at=expires_at)
    ttl = await client.pttl(upload_key(prefix, expiring.id, "state")) / 1000
    assert ttl == pytest.approx(100 + EXPIRED_TTL, abs=2)  # abandoned: gone soon after

    lock = await locker.acquire(plain.id, ignore)
    await written(store, state, plain, lock, b"ab")
    assert await client.pttl(key) == -1
    await written(store, state, plain, lock, b"cd")
    assert plain.finished
    assert await client.pttl(key) / 1000 == pytest.approx(FINISHED_TTL, abs=2)
    await lock.release()
    # The finished info reached the storage copy, so a rebuild after the TTL is complete.
    await client.delete(key)
    got = await state.get(plain.id)
    assert got is not None and got.finished
    assert await client.pttl(key) / 1000 == pytest.approx(FINISHED_TTL, abs=2)

    empty = await new_upload(store, state, length=0)  # complete at creation
    assert await client.pttl(upload_key(prefix, empty.id, "state")) > 0


async def test_the_state_hash_is_about_the_size_of_the_metadata_header(
    state: RedisState, store: FileStore, client: Redis, prefix: str
) -> None:
    """Issue 14, finding 6: 8 KB of binary metadata cost ~33 KB when the info held the decoded
    form too (6-byte escapes); the header alone is stored now."""
    header = heavy_metadata(random.Random(6))
    info = await new_upload(store, state, length=10, metadata_header=header)
    usage = await client.memory_usage(upload_key(prefix, info.id, "state"))
    # ~10.5 KB: the JSON (8.3 KB) in jemalloc's 10 KiB size class, and the hash around it.
    assert usage is not None and len(header) < usage < 1.5 * len(header), (usage, len(header))
    got = await state.get(info.id)
    assert got is not None and got.metadata == info.metadata and got.metadata_header == header
    assert got.metadata["blob"].count("\ufffd") > 1000  # the case that cost the escapes


async def test_delete(state: RedisState, store: FileStore, client: Redis, prefix: str) -> None:
    info = await new_upload(store, state)
    await store.terminate(info)
    await state.delete(info.id)
    assert await client.exists(upload_key(prefix, info.id, "state")) == 0
    assert await state.get(info.id) is None


async def test_redis_outage_is_503_then_recovers(
    redis: RedisServer, state: RedisState, store: FileStore, locker: RedisLocker
) -> None:
    info = await new_upload(store, state)
    lock = await locker.acquire(info.id, ignore)
    await state.commit(info, 3, lock)
    with redis_down(redis):
        started = time.monotonic()
        call: Callable[[], Awaitable[object]]
        for call in (
            lambda: state.get(info.id),
            lambda: state.commit(info, 5, lock),
            lambda: state.update(info, None),
            lambda: state.create(UploadInfo(id=new_upload_id(), length=1)),
            lambda: state.delete(info.id),
        ):
            with pytest.raises(TusError) as err:
                await call()
            assert err.value.status == 503
            assert "Redis is unreachable" in err.value.message
            assert err.value.headers["Retry-After"]
        assert time.monotonic() - started < 10  # fails fast, no long hangs
    # Redis is back, empty: the pool reconnects by itself and state is rebuilt from storage.
    got = await state.get(info.id)
    assert got is not None and got.offset == 0  # nothing was written to the file itself
    # The old lease died with Redis' data: the old holder cannot commit.
    with pytest.raises(TusError) as err:
        await state.commit(got, 1, lock)
    assert err.value.code == "lock-lost"


async def test_build_redis_backends_share_one_client(
    redis: RedisServer, store: FileStore, prefix: str
) -> None:
    config = Config(redis_url=redis.url, redis_prefix=prefix, lock_lease=2.0)
    state, locker = build_redis_backends(config, store)
    assert state._client is locker._client
    assert state.expiration == config.expiration  # a rebuild counts the expiry with it
    await state.open()
    info = UploadInfo(id=new_upload_id(), length=3)
    await store.create(info)
    await state.create(info)
    lock = await locker.acquire(info.id, ignore)
    await state.commit(info, 3, lock)
    await lock.release()
    await locker.close()
    # The client stays usable for the state until its last user closes it.
    got = await state.get(info.id)
    assert got is not None and got.offset == 3
    await state.close()
    await asyncio.sleep(0)
