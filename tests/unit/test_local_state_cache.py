"""Local state keeps a bounded number of uploads in memory; the rest comes back from `.info`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

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
    await store.write(first, _chunks(b"abcd"), lambda offset: state.commit(first, offset, lock))
    await lock.release()
    for info in infos[1:]:
        assert await state.get(info.id) is not None
    assert len(state._cache) == 3 and first.id not in state._cache
    again = await state.get(first.id)  # read back from the store's .info and .progress
    assert again is not None and (again.offset, again.metadata) == (4, {"n": "0"})
    assert len(state._cache) == 3 and first.id in state._cache


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
