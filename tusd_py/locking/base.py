"""Per-upload locks with handover.

Every request that touches an upload holds its lock. A request that finds the lock taken asks the
holder to let go (`on_release_request` of the holder is called, in this process or, with Redis,
in whichever instance holds it); the holder stops reading its body, commits what it has and
releases. Only when that does not happen within the acquire timeout does the newcomer get 423.

A reader (HEAD) does not take the lock: it learns the `holder` and, when there is one, asks it to
`let_go` and waits until it has, so a stale PATCH still commits before the offset is read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from tusd_py.info import UploadInfo

ReleaseRequest = Callable[[], None]


@runtime_checkable
class HolderReader(Protocol):
    """A state store that reads an upload's lock holder in the same round trip as its state."""

    async def get_with_holder(self, upload_id: str) -> tuple[UploadInfo | None, str | None]:
        """The upload's info (as `StateStore.get`) and its lock holder's token (None: free)."""


class Lock(ABC):
    """A held lock: a lease identified by a random token."""

    upload_id: str
    token: str

    @property
    @abstractmethod
    def valid(self) -> bool:
        """False once the lease is known lost (expired, taken over, released)."""

    @abstractmethod
    async def release(self) -> None:
        """Let go; does nothing when the lock is no longer ours."""


class Locker(ABC):
    @abstractmethod
    async def acquire(self, upload_id: str, on_release_request: ReleaseRequest) -> Lock:
        """Take the upload's lock, asking a current holder to hand over.

        `on_release_request` is called (at most once is not guaranteed) when another request wants
        this lock or when the lease is lost. Raises a 423 `TusError` after the acquire timeout.
        """

    @abstractmethod
    async def holder(self, upload_id: str) -> str | None:
        """The token of the lock's current holder, or None when nobody holds it."""

    @abstractmethod
    async def let_go(self, upload_id: str, holder: str) -> None:
        """Ask `holder` to let go of the lock without taking it; return once it has (the lock is
        free or held by someone else). Callers waiting for one holder share one request and are
        all answered when it releases. Raises a 423 `TusError` after the acquire timeout."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare at app start (Redis: load scripts, subscribe); a no-op by default."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background work (renewal, subscriptions)."""
