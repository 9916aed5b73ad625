"""In-process locker: one process, no lease expiry needed (the holder cannot crash alone)."""

from __future__ import annotations

import asyncio
import secrets

from tusd_py.errors import locked
from tusd_py.locking.base import Lock, Locker, ReleaseRequest


class _MemoryLock(Lock):
    def __init__(self, locker: MemoryLocker, upload_id: str, on_release_request: ReleaseRequest):
        self.upload_id = upload_id
        self.token = secrets.token_hex(16)
        self.on_release_request = on_release_request
        self.released = asyncio.Event()
        self.asked_to_let_go = False
        self._locker = locker

    @property
    def valid(self) -> bool:
        return not self.released.is_set()

    async def release(self) -> None:
        self._locker._release(self)


class MemoryLocker(Locker):
    def __init__(self, acquire_timeout: float = 10.0) -> None:
        self.acquire_timeout = acquire_timeout
        self._held: dict[str, _MemoryLock] = {}

    async def acquire(self, upload_id: str, on_release_request: ReleaseRequest) -> Lock:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.acquire_timeout
        while (holder := self._held.get(upload_id)) is not None:
            holder.on_release_request()
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    await holder.released.wait()
            except TimeoutError:
                raise locked(upload_id) from None
        lock = _MemoryLock(self, upload_id, on_release_request)
        self._held[upload_id] = lock
        return lock

    async def holder(self, upload_id: str) -> str | None:
        lock = self._held.get(upload_id)
        return None if lock is None else lock.token

    async def let_go(self, upload_id: str, holder: str) -> None:
        lock = self._held.get(upload_id)
        if lock is None or lock.token != holder:
            return
        if not lock.asked_to_let_go:
            lock.asked_to_let_go = True  # one request for every reader waiting on this holder
            lock.on_release_request()
        try:
            async with asyncio.timeout(self.acquire_timeout):
                await lock.released.wait()
        except TimeoutError:
            raise locked(upload_id) from None

    def _release(self, lock: _MemoryLock) -> None:
        if self._held.get(lock.upload_id) is lock:
            del self._held[lock.upload_id]
        lock.released.set()
