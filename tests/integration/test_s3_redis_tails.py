"""S3Store keeping incomplete parts in Redis (`RedisTails`): real redis-server, real moto S3.

The same PATCH patterns as test_s3_store.py, but the bytes of a part that is not full yet wait
in Redis instead of S3 segments: each byte goes to S3 once, and Redis holds about a part per
unfinished upload, never more, and nothing once the upload has finished or been terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis import Redis as SyncRedis

from tests.integration.test_s3_store import (
    PART,
    FakeState,
    delta,
    failing_after,
    new_upload,
    object_bytes,
    open_multipart_uploads,
    patch,
)
from tests.support.payloads import chunked, payload, sha256
from tests.support.s3_client import bucket_keys
from tests.support.servers import RedisServer, S3Server
from tusd_py.config import Config
from tusd_py.errors import TusError
from tusd_py.info import UploadInfo
from tusd_py.redis_client import make_client
from tusd_py.stores.s3 import MIB, REDIS_TAIL_MAX_PART, RedisTails, S3Store, S3Upload


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def opened(
    s3: S3Server, bucket: str, redis: RedisServer, prefix: str, **options: Any
) -> AsyncIterator[S3Store]:
    store = S3Store(bucket, endpoint=s3.endpoint, part_size=PART, **options)
    store.use_redis_tails(RedisTails(make_client(redis.url, decode=False), prefix))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def tail_keys(redis: RedisServer, prefix: str) -> dict[str, int]:
    """Every tail key under `prefix` with its length (the index sets as -1)."""
    client = SyncRedis.from_url(redis.url)
    found = {}
    for key in client.scan_iter(match=f"{prefix}:*"):
        name = key.decode()
        if ":tail" in name:
            found[name] = client.strlen(key) if client.type(key) == b"string" else -1
    return found


def count_tails(redis: RedisServer, prefix: str) -> int:
    """Segments in Redis."""
    return sum(1 for length in tail_keys(redis, prefix).values() if length >= 0)


def parts_with_tails(redis: RedisServer, prefix: str) -> set[int]:
    """Parts with segments in Redis (keys end in `:tail:<n>:<pos>`)."""
    return {int(k.split(":")[-2]) for k, n in tail_keys(redis, prefix).items() if n >= 0}


async def test_1mib_patches_send_each_byte_to_s3_once(
    s3: S3Server, bucket: str, redis: RedisServer, prefix: str
) -> None:
    """tus-js-client's 1 MiB chunks: the tail grows in Redis; S3 sees only whole parts."""
    data = payload(12 * MIB + 100)
    async with (
        opened(s3, bucket, redis, prefix) as a,
        opened(s3, bucket, redis, prefix) as b,
    ):
        info = await new_upload(a, len(data))
        assert info.storage["tails"] == "redis"
        costs, tails = [], []
        for i, pos in enumerate(range(0, len(data), MIB)):
            # Alternate two "instances": b never saw a's tails, so it reads them from Redis.
            store = a if i % 4 < 2 else b
            before = Counter(store.request_counts)
            await patch(store, info, data[pos : pos + MIB], 64 * 1024)
            await store.parts.settle(info.id)  # count a background part upload with its PATCH
            costs.append(delta(store, before))
            tails.append(count_tails(redis, prefix))
            assert parts_with_tails(redis, prefix) <= {i // 5 + 1}
        print("S3 requests per 1 MiB PATCH:", costs, "tails in Redis:", tails)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)
    # Inside a part: no S3 request at all, the bytes went to Redis.
    assert costs[1] == {} and costs[2] == {}
    # PATCH 5 fills part 1: its UploadPart, in the background; once it is in S3 (and the offset
    # covers it) the part's segments go, so Redis holds one part's worth per upload at most.
    assert costs[4] == {"upload_part": 1}
    assert tails[:6] == [1, 2, 3, 4, 0, 1]
    # The last PATCH: the final short part, ListParts and Complete; nothing left anywhere.
    assert costs[-1] == {"upload_part": 1, "list_parts": 1, "complete_multipart_upload": 1}
    assert bucket_keys(s3, bucket) == [info.id, f"{info.id}.info"]
    assert tail_keys(redis, prefix) == {}


@pytest.mark.parametrize("sizes", [[3 * MIB, 4 * MIB, 5 * MIB + 1, 7, 2 * MIB], [PART + 1] * 3])
async def test_uneven_patches_yield_the_object_and_leave_no_tails(
    s3: S3Server, bucket: str, redis: RedisServer, prefix: str, sizes: list[int]
) -> None:
    data = payload(sum(sizes), seed=len(sizes))
    async with opened(s3, bucket, redis, prefix) as store:
        info = await new_upload(store, len(data))
        pos = 0
        for size in sizes:
            await patch(store, info, data[pos : pos + size], 100_000)
            pos += size
            # Parts in S3 lose their tails by the next PATCH: at most the current part's and
            # the one just uploaded in this PATCH wait in Redis.
            assert len(parts_with_tails(redis, prefix)) <= 2
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)
    assert tail_keys(redis, prefix) == {}
    assert open_multipart_uploads(s3, bucket) == []


async def test_stored_offset_counts_the_redis_tail(
    s3: S3Server, bucket: str, redis: RedisServer, prefix: str
) -> None:
    """A state rebuild (Redis state lost, tails kept) finds parts in S3 and the tail in Redis."""
    data = payload(2 * PART + 3 * MIB)
    async with opened(s3, bucket, redis, prefix) as store:
        info = await new_upload(store, len(data))
        await patch(store, info, data[: PART + 2 * MIB], MIB)
        await patch(store, info, data[PART + 2 * MIB : 2 * PART + MIB], MIB)
        await store.parts.settle(info.id)
        assert await store.stored_offset(info) == 2 * PART + MIB
    async with opened(s3, bucket, redis, prefix) as fresh:  # another process: no cache
        assert await fresh.stored_offset(info) == 2 * PART + MIB
        await patch(fresh, info, data[2 * PART + MIB :], MIB)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)
    assert tail_keys(redis, prefix) == {}


async def test_failed_commit_keeps_the_committed_tail_only(
    s3: S3Server, bucket: str, redis: RedisServer, prefix: str
) -> None:
    """A PATCH whose bytes reached Redis but whose commit failed: the next PATCH from the
    committed offset replaces them, and the object holds the right bytes."""
    data = payload(PART + 2 * MIB)
    async with opened(s3, bucket, redis, prefix) as store:
        info = await new_upload(store, len(data))
        await patch(store, info, data[:MIB], MIB)
        state = FakeState(info, store)
        state.lose_lock_after = 0
        wrong = b"\xff" * (2 * MIB)
        with pytest.raises(TusError):
            end = await store.write(info, chunked(wrong, MIB), state.commit)
            await state.commit(end)  # the tail's commit, which the store leaves to its caller
        assert info.offset == MIB
        # The failed PATCH's bytes linger beside the committed ones, until replaced.
        assert sorted(tail_keys(redis, prefix).values()) == [-1, MIB, 2 * MIB]
        await patch(store, info, data[MIB:], MIB)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


async def test_body_cut_short_commits_what_arrived(
    s3: S3Server, bucket: str, redis: RedisServer, prefix: str
) -> None:
    data = payload(PART + 3 * MIB)
    async with opened(s3, bucket, redis, prefix) as store:
        info = await new_upload(store, len(data))
        state = FakeState(info, store)
        with pytest.raises(ConnectionResetError):
            await store.write(
                info, failing_after(data[:MIB], 65536, ConnectionResetError()), state.commit
            )
        assert info.offset == 0  # the body failed: nothing of it is committed
        await patch(store, info, data[: 2 * MIB], MIB)
        await patch(store, info, data[2 * MIB :], MIB)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)
    assert tail_keys(redis, prefix) == {}


async def test_terminate_deletes_the_tails(
    s3: S3Server, bucket: str, redis: RedisServer, prefix: str
) -> None:
    data = payload(PART + 2 * MIB)
    async with opened(s3, bucket, redis, prefix) as store:
        info = await new_upload(store, 3 * PART)
        await patch(store, info, data[: 3 * MIB], MIB)
        await patch(store, info, data[3 * MIB :], MIB)
        assert count_tails(redis, prefix) >= 1
        await store.terminate(info)
    assert tail_keys(redis, prefix) == {}
    assert bucket_keys(s3, bucket) == []
    assert open_multipart_uploads(s3, bucket) == []


async def test_terminate_right_after_a_patch_cancels_its_background_part_upload(
    s3: S3Server, bucket: str, redis: RedisServer, prefix: str
) -> None:
    """The PATCH that fills a part begun by earlier PATCHes leaves its UploadPart running after it
    answers; a DELETE that comes before that upload's waiter ever ran must still stop it."""
    async with opened(s3, bucket, redis, prefix) as store:
        info = await new_upload(store, 3 * PART)
        await patch(store, info, payload(3 * MIB), MIB)
        never_done = asyncio.get_running_loop().create_future()

        async def part_upload() -> None:
            await never_done  # an UploadPart stuck on a slow S3

        part = asyncio.create_task(part_upload())
        store.parts.upload_in_background(S3Upload.from_info(info), 1, part)
        await store.terminate(info)  # no await between: the waiter has not started
        assert part.cancelled()
        assert not store.parts.in_background(info.id)
    assert tail_keys(redis, prefix) == {}
    assert bucket_keys(s3, bucket) == []
    assert open_multipart_uploads(s3, bucket) == []


async def test_tails_expire_after_their_upload(
    s3: S3Server, bucket: str, redis: RedisServer, prefix: str
) -> None:
    """An abandoned upload's tail does not stay in Redis for ever when uploads expire."""
    import time

    async with opened(s3, bucket, redis, prefix) as store:
        info = await new_upload(store, 3 * MIB)
        info.expires_at = time.time() + 3600
        await patch(store, info, payload(MIB), MIB)
    client = SyncRedis.from_url(redis.url)
    ttls = [client.ttl(key) for key in tail_keys(redis, prefix)]
    assert len(ttls) == 2 and all(3600 < ttl <= 3600 + 25 * 3600 for ttl in ttls), ttls


async def test_large_parts_and_no_redis_keep_tails_in_s3(
    s3: S3Server, bucket: str, redis: RedisServer, prefix: str
) -> None:
    async with opened(s3, bucket, redis, prefix) as store:
        big = UploadInfo(id=uuid.uuid4().hex, length=10_000 * (REDIS_TAIL_MAX_PART + MIB))
        await store.create(big)
        assert big.storage["tails"] == "s3" and big.storage["part_size"] > REDIS_TAIL_MAX_PART
        small = await new_upload(store, 3 * MIB)
        assert small.storage["tails"] == "redis"
    # An instance without Redis cannot take bytes for an upload whose tail is in Redis.
    async with contextlib.AsyncExitStack() as stack:
        plain = S3Store(bucket, endpoint=s3.endpoint, part_size=PART)
        await plain.open()
        stack.push_async_callback(plain.close)
        state = FakeState(small, plain)
        with pytest.raises(TusError) as caught:
            await plain.write(small, chunked(payload(MIB), MIB), state.commit)
        assert "--redis-url" in caught.value.message


async def test_evicted_tail_is_reported_not_mixed_up(
    s3: S3Server, bucket: str, redis: RedisServer, prefix: str
) -> None:
    data = payload(3 * MIB)
    async with opened(s3, bucket, redis, prefix) as store:
        info = await new_upload(store, len(data))
        await patch(store, info, data[:MIB], MIB)
    SyncRedis.from_url(redis.url).delete(*tail_keys(redis, prefix))
    async with opened(s3, bucket, redis, prefix) as fresh:
        state = FakeState(info, fresh)
        with pytest.raises(TusError) as caught:
            await fresh.write(info, chunked(data[MIB:], MIB), state.commit)
        assert caught.value.status == 500 and "noeviction" in caught.value.message


def test_config_wires_redis_tails_to_s3_stores(redis: RedisServer) -> None:
    def wired(**options: Any) -> bool:
        config = Config(s3_bucket="b", **options)
        store = S3Store.from_config(config)
        store.use_redis(config)
        return store.parts.redis_tails is not None

    assert wired(redis_url=redis.url)
    assert wired(redis_url=redis.url, s3_tails="redis")
    assert not wired(redis_url=redis.url, s3_tails="s3")
    assert not wired()
    with pytest.raises(ValueError, match="needs --redis-url"):
        Config(s3_bucket="b", s3_tails="redis")
