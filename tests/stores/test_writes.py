"""The contract, part 2: writing (pieces, commits, failures, deferred length, finish)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.stores.conftest import Medium
from tests.stores.helpers import (
    CommitFailed,
    Commits,
    chunks,
    failing_after,
    new_info,
    stored_bytes,
    write,
    write_and_commit,
)
from tests.support.payloads import payload, sha256
from tusd_py.stores.base import DataStore, LengthDeferrer, WriteClock


class SourceFailed(Exception):
    """What the chunk source raises (the body broke off, its checksum did not match)."""


async def test_write_in_pieces(medium: Medium, store: DataStore) -> None:
    data = payload(medium.unit + medium.unit // 2)
    info = new_info(len(data))
    await store.create(info)
    cuts = [0, medium.unit // 3, medium.unit + 100, len(data)]
    for start, end in itertools.pairwise(cuts):
        await write(store, info, data[start:end])
        assert info.offset == end
        assert await store.stored_offset(info) == end
    await store.finish(info)
    assert sha256(await stored_bytes(store, info)) == sha256(data)


async def test_last_write_follows_the_writes(medium: Medium, store: DataStore) -> None:
    """What a state rebuilt from storage counts an upload's expiry from (state/redis.py)."""
    assert isinstance(store, WriteClock)
    data = payload(medium.unit + medium.unit // 2)
    info = new_info(len(data))
    before = time.time()
    await store.create(info)
    await write(store, info, data[:100])  # less than a part: S3 keeps it as a segment
    first = await store.last_write(info)
    # Services stamp whole seconds (S3's LastModified, Azure's Last-Modified).
    assert first is not None and before - 1 <= first <= time.time() + 1
    await asyncio.sleep(1.1)
    await write(store, info, data[100 : medium.unit + 100])  # S3: a part
    other = await medium.open()  # another instance sees it too
    assert isinstance(other, WriteClock)
    second = await other.last_write(info)
    assert second is not None and second > first


async def test_commits_increase_and_never_pass_the_stored_bytes(
    medium: Medium, store: DataStore
) -> None:
    data = payload(2 * medium.unit + medium.unit // 2)
    info = new_info(len(data))
    await store.create(info)
    commits = Commits(info, await medium.open())  # checks each commit from another instance
    end = await write_and_commit(store, info, chunks(data), commits)
    assert end == len(data)
    assert commits.offsets == sorted(set(commits.offsets))
    assert commits.offsets[-1] == end


async def test_a_failing_chunk_source_commits_nothing_more(
    medium: Medium, store: DataStore
) -> None:
    data = payload(3 * medium.unit)
    sent = 2 * medium.unit + medium.unit // 2
    info = new_info(len(data))
    await store.create(info)
    commits = Commits(info, store)
    with pytest.raises(SourceFailed):
        await store.write(info, failing_after(data[:sent], SourceFailed()), commits)
    committed = commits.offsets[-1] if commits.offsets else 0
    assert info.offset == committed
    for instance in (store, await medium.open()):
        stored = await instance.stored_offset(info)
        if medium.undoes_landed_bytes:
            assert stored == committed
        else:  # whole parts that landed anyway, never more than was sent
            assert committed <= stored <= sent
    await write(store, info, data[committed:])
    await store.finish(info)
    assert sha256(await stored_bytes(store, info)) == sha256(data)


async def test_a_failing_chunk_source_error_is_re_raised_as_it_is(
    medium: Medium, store: DataStore
) -> None:
    data = payload(medium.unit)
    info = new_info(len(data))
    await store.create(info)
    error = ConnectionResetError(104, "the source's socket broke")  # an OSError, not the disk's
    with pytest.raises(ConnectionResetError) as raised:
        await store.write(info, failing_after(data[:100], error), Commits(info, store))
    assert raised.value is error


async def test_a_failing_commit_stops_the_write(medium: Medium, store: DataStore) -> None:
    data = payload(3 * medium.unit)
    info = new_info(len(data))
    await store.create(info)
    commits = Commits(info, store, fail_at=1)
    with pytest.raises(CommitFailed):
        await store.write(info, chunks(data), commits)
    assert commits.calls == 1, "nothing is committed after a commit failed"
    assert info.offset == 0


async def test_finish_is_idempotent(medium: Medium, store: DataStore) -> None:
    data = payload(medium.unit + 100)
    info = new_info(len(data))
    await store.create(info)
    await write(store, info, data)
    await store.finish(info)
    await store.finish(info)
    assert await store.stored_offset(info) == len(data)
    assert sha256(await stored_bytes(store, info)) == sha256(data)


async def test_deferred_length_then_declare_length(medium: Medium, store: DataStore) -> None:
    data = payload(medium.unit + medium.unit // 2)
    info = new_info(None)
    await store.create(info)
    await write(store, info, data[: medium.unit + 100])
    assert isinstance(store, LengthDeferrer)
    info.length = len(data)
    await store.declare_length(info)
    await store.save_info(info)
    assert await (await medium.open()).load_info(info.id) == info
    await write(store, info, data[medium.unit + 100 :])
    await store.finish(info)
    assert sha256(await stored_bytes(store, info)) == sha256(data)
