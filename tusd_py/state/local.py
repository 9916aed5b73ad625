"""State kept by the data store itself, in its `.info` copy (and, for commits before the last,
whatever `save_progress` writes: the file store's `.progress`): one process, no Redis.

Correct only while a single process serves the uploads (the in-process locker is what makes the
token check meaningful); the CLI says so when it is combined with storage that could be shared.
"""

from __future__ import annotations

import copy

from tusd_py.errors import lock_lost
from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock
from tusd_py.state.base import StateStore
from tusd_py.stores.base import DataStore


class LocalState(StateStore):
    def __init__(self, store: DataStore) -> None:
        self._store = store
        # Saves a JSON read per HEAD; the store's `.info` stays the source of truth on restart.
        self._cache: dict[str, UploadInfo] = {}

    async def create(self, info: UploadInfo) -> None:
        self._cache[info.id] = copy.deepcopy(info)

    async def get(self, upload_id: str) -> UploadInfo | None:
        cached = self._cache.get(upload_id)
        if cached is None:
            cached = await self._store.load_info(upload_id)
            if cached is None:
                return None
            self._cache[upload_id] = cached
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
        self._cache[info.id] = copy.deepcopy(info)

    async def update(self, info: UploadInfo, lock: Lock | None) -> None:
        if lock is not None and not lock.valid:
            raise lock_lost(info.id)
        await self._store.save_info(info)
        self._cache[info.id] = copy.deepcopy(info)

    async def delete(self, upload_id: str) -> None:
        self._cache.pop(upload_id, None)
