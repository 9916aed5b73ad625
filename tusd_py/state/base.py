"""Upload state: info and the committed offset, shared by every request for an upload."""

from __future__ import annotations

from abc import ABC, abstractmethod

from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock, Locker, ReleaseRequest


class StateStore(ABC):
    """Where the authoritative info and committed offset of each upload live.

    The offset moves only forward and only for the current lock holder (`lock` is checked in the
    same step as the write). `get` rebuilds state from the data store when it is missing.
    """

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect. Called once at app start."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect. Called once at app shutdown."""

    async def ready(self) -> None:  # noqa: B027 - optional hook
        """Raise when the backend is unreachable right now (for `/ready`); a no-op by default."""

    @abstractmethod
    async def create(self, info: UploadInfo) -> None:
        """Record a new upload (its data-store side already exists)."""

    async def create_held(
        self, info: UploadInfo, locker: Locker, on_release_request: ReleaseRequest
    ) -> Lock:
        """`create`, then take the new upload's lock from `locker` (a creation with a body). A
        state may do both in one step (Redis: one script); either way the lock is taken only
        when the state was written, and nobody else can hold it yet."""
        await self.create(info)
        return await locker.acquire(info.id, on_release_request)

    @abstractmethod
    async def get(self, upload_id: str) -> UploadInfo | None:
        """The upload's current info, or None when neither state nor storage knows it."""

    async def get_held(self, upload_id: str, lock: Lock) -> UploadInfo | None:
        """`get` for the holder of `lock`, right after taking it: a state may answer from what
        was read together with taking the lock (Redis: one round trip for both)."""
        return await self.get(upload_id)

    @abstractmethod
    async def commit(self, info: UploadInfo, offset: int, lock: Lock) -> None:
        """Move the committed offset forward to `offset` and persist `info.expires_at`.

        Raises `lock_lost` when `lock` is no longer the holder; never moves an offset backwards.
        On success `info.offset` is `offset`.
        """

    async def commit_and_release(self, info: UploadInfo, offset: int, lock: Lock) -> None:
        """`commit`, then `lock.release()`: the request's last use of the upload's state and
        lock. A state may do both in one step (Redis: one script). When the commit fails the
        lock may still be held; the caller's `held` block releases it."""
        await self.commit(info, offset, lock)
        await lock.release()

    @abstractmethod
    async def update(self, info: UploadInfo, lock: Lock | None) -> None:
        """Persist changed info fields (declared length, storage details), keeping the offset."""

    async def update_and_release(self, info: UploadInfo, lock: Lock) -> None:
        """`update`, then `lock.release()`: the request's last use of the upload's state and
        lock (its completion). A state may do both in one step (Redis: one script). When the
        update fails the lock may still be held; the caller's `held` block releases it."""
        await self.update(info, lock)
        await lock.release()

    @abstractmethod
    async def delete(self, upload_id: str) -> None:
        """Forget the upload."""
