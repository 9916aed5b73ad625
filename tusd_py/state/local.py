"""State kept by the data store itself, in its `.info` copy (and, for commits before the last,
whatever `save_progress` writes: the file store's `.progress`): one process, no Redis.

Correct only while a single process serves the uploads (the in-process locker is what makes the
token check meaningful); the CLI says so when it is combined with storage that could be shared.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

from tusd_py.errors import lock_lost
from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock
from tusd_py.state.base import StateStore
from tusd_py.stores.base import DataStore

# Uploads whose info stays in memory (a few KiB each with metadata); the rest is read back from
# the store's `.info` when asked for.
CACHE_SIZE = 10_000


class LocalState(StateStore):
    def __init__(self, store: DataStore, cache_size: int = CACHE_SIZE) -> None:
        self._store = store
        # Saves a JSON read per HEAD of a recent upload; every write goes to the store first, so
        # the store's copy is always as new as this one and an evicted entry loses nothing.
        self._cache: OrderedDict[str, UploadInfo] = OrderedDict()
        self._cache_size = cache_size

    def _remember(self, info: UploadInfo) -> None:
        self._cache[info.id] = info
        self._cache.move_to_end(info.id)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def create(self, info: UploadInfo) -> None:
        self._remember(copy.deepcopy(info))

    async def get(self, upload_id: str) -> UploadInfo | None:
        cached = self._cache.get(upload_id)
        if cached is None:
            cached = await self._store.load_info(upload_id)
            if cached is None:
                return None
        self._remember(cached)
        return copy.deepcopy(cached)

    async def commit(self, info: UploadInfo, offset: int, lock: Lock) -> None:
        if not lock.valid:
            raise lock_lost(info.id)
        if offset < info.offset:
            raise ValueError(f"offset may only move forward ({info.offset} -> {offset})")
        info.offset = offset
        if info.finished:
            await self._store.save_info(info)  # once per upload: the `.info` whole again
        else:
            await self._store.save_progress(info)
        self._remember(copy.deepcopy(info))

    async def update(self, info: UploadInfo, lock: Lock | None) -> None:
        if lock is not None and not lock.valid:
            raise lock_lost(info.id)
        await self._store.save_info(info)
        self._remember(copy.deepcopy(info))

    async def delete(self, upload_id: str) -> None:
        self._cache.pop(upload_id, None)
