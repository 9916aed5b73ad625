"""State kept by the data store itself, in its `.info` copy (and, for commits before the last,
whatever `save_progress` writes: the file store's `.progress`): one process, no Redis.

Correct only while a single process serves the uploads (the in-process locker is what makes the
token check meaningful); the CLI says so when it is combined with storage that could be shared.
"""

from __future__ import annotations

from collections import OrderedDict

from tusd_py.errors import lock_lost
from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock
from tusd_py.state.base import StateStore
from tusd_py.stores.base import DataStore

# Uploads whose info stays in memory; the rest is read back from the store's `.info` when asked
# for. Both bounds hold: with 8 KB of metadata the bytes bound comes first (~7,600 uploads in
# 64 MiB).
CACHE_SIZE = 10_000
CACHE_BYTES = 64 * 1024**2
# What a cached entry costs beside its metadata header: the UploadInfo in its stored form (no
# decoded metadata), its dicts and the cache's slot (~800 bytes, measured with tracemalloc).
ENTRY_COST = 800


def _cost(info: UploadInfo) -> int:
    return ENTRY_COST + len(info.metadata_header or "") + 40 * len(info.parts)


class LocalState(StateStore):
    def __init__(
        self, store: DataStore, cache_size: int = CACHE_SIZE, cache_bytes: int = CACHE_BYTES
    ) -> None:
        self._store = store
        # Saves a read of the `.info` per HEAD of a recent upload; every write goes to the store
        # first, so the store's copy is always as new as this one and an evicted entry loses
        # nothing. Each entry is a private copy in its stored form, and each `get` hands out a
        # copy of it: parsing the JSON instead cost ~6 µs of every HEAD and PATCH.
        self._cache: OrderedDict[str, tuple[UploadInfo, int]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self.cached_bytes = 0

    def _remember(self, info: UploadInfo) -> None:
        self._forget(info.id)
        if not self._cache_size or not self._cache_bytes:
            return  # no cache (`--workers` above 1): the entry would be evicted at once
        cost = _cost(info)
        self._cache[info.id] = info.stored_form(), cost
        self.cached_bytes += cost
        while self._cache and (
            len(self._cache) > self._cache_size or self.cached_bytes > self._cache_bytes
        ):
            _, (_, evicted) = self._cache.popitem(last=False)
            self.cached_bytes -= evicted

    def _forget(self, upload_id: str) -> None:
        entry = self._cache.pop(upload_id, None)
        if entry is not None:
            self.cached_bytes -= entry[1]

    async def create(self, info: UploadInfo) -> None:
        self._remember(info)

    async def get(self, upload_id: str) -> UploadInfo | None:
        entry = self._cache.get(upload_id)
        if entry is None:
            info = await self._store.load_info(upload_id)
            if info is None:
                return None
            self._remember(info)
            return info
        self._cache.move_to_end(upload_id)
        return entry[0].copy()

    async def commit(self, info: UploadInfo, offset: int, lock: Lock) -> None:
        if not lock.valid:
            raise lock_lost(info.id)
        if offset < info.offset:
            raise ValueError(f"offset may only move forward ({info.offset} -> {offset})")
        info.offset = offset
        # The last commit too: the completion that follows (uploads.complete_upload) writes the
        # `.info` whole, with `completed`; writing it here as well cost each finished upload a
        # second `.info` replacement, which ext4 flushes (auto_da_alloc).
        await self._store.save_progress(info)
        self._remember(info)

    async def update(self, info: UploadInfo, lock: Lock | None) -> None:
        if lock is not None and not lock.valid:
            raise lock_lost(info.id)
        await self._store.save_info(info)
        self._remember(info)

    async def delete(self, upload_id: str) -> None:
        self._forget(upload_id)
