"""Local state keeps a bounded number of uploads, and bytes, in memory; the rest comes back from
`.info`."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

from tests.support.payloads import heavy_metadata
from tusd_py.info import UploadInfo
from tusd_py.locking.memory import MemoryLocker
from tusd_py.state.local import LocalState
from tusd_py.stores.file import FileStore


async def test_the_cache_is_bounded_and_an_evicted_upload_loses_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.open()
    state = LocalState(store, cache_size=3)
    locker = MemoryLocker(1.0)
    infos = [UploadInfo(id=f"{i:032x}", length=10, metadata={"n": str(i)}) for i in range(5)]
    for info in infos:
        await store.create(info)
        await state.create(info)
    first = infos[0]
    lock = await locker.acquire(first.id, lambda: None)
    end = await store.write(first, _chunks(b"abcd"), lambda off: state.commit(first, off, lock))
    await state.commit(first, end, lock)  # the last commit is the caller's (stores/base.py)
    await lock.release()
    for info in infos[1:]:
        assert await state.get(info.id) is not None
    assert len(state._cache) == 3 and first.id not in state._cache
    again = await state.get(first.id)  # read back from the store's .info and .progress
    assert again is not None and (again.offset, again.metadata) == (4, {"n": "0"})
    assert len(state._cache) == 3 and first.id in state._cache


async def test_the_cache_is_bounded_by_bytes_too(tmp_path: Path) -> None:
    """Issue 14, finding 5's open end: 10,000 uploads with 8 KB of metadata were ~310 MB."""
    store = FileStore(tmp_path)
    await store.open()
    state = LocalState(store, cache_size=1000, cache_bytes=100_000)
    rng = random.Random(5)
    infos = [
        UploadInfo(id=f"{i:032x}", length=10, metadata_header=heavy_metadata(rng))
        for i in range(30)
    ]
    for info in infos:
        await store.create(info)
        await state.create(info)
        assert state.cached_bytes <= 100_000
    assert 10 <= len(state._cache) <= 12  # ~8.8 KB each
    assert state.cached_bytes == sum(cost for _, cost in state._cache.values())
    assert list(state._cache) == [info.id for info in infos[-len(state._cache) :]]
    oldest = await state.get(infos[0].id)  # read back from .info, and cached again
    assert oldest == infos[0] and next(reversed(state._cache)) == infos[0].id
    await state.delete(infos[0].id)
    assert state.cached_bytes == sum(cost for _, cost in state._cache.values())


async def test_a_cached_info_is_a_copy(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.open()
    state = LocalState(store)
    info = UploadInfo(id="a" * 32, length=10, metadata={"name": "a.bin"})
    await store.create(info)
    await state.create(info)
    got = await state.get(info.id)
    assert got == info and got is not info
    got.metadata["name"], got.offset = "changed", 5
    assert await state.get(info.id) == info
    info.storage["nested"] = {"parts": [1]}  # as a store of one's own may keep
    await state.update(info, None)
    got = await state.get(info.id)
    assert got is not None
    got.storage["nested"]["parts"].append(2)
    got.parts.append("b" * 32)
    info.metadata["name"] = "changed after"  # the caller's own object is not the cached one
    again = await state.get(info.id)
    assert again is not None and again.storage["nested"] == {"parts": [1]} and again.parts == []
    assert again.metadata == {"name": "a.bin"}


async def test_no_cache_at_all(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.open()
    state = LocalState(store, cache_bytes=0)
    info = UploadInfo(id="a" * 32, length=10)
    await store.create(info)
    await state.create(info)
    assert len(state._cache) == 0 and state.cached_bytes == 0
    assert await state.get(info.id) == info


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
