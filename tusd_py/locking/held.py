"""The one way the server takes upload locks: async context managers that time the wait.

Every request that touches an upload goes through `held`; concatenation, which needs several
uploads at once, goes through `all_held`, which takes them in sorted order so that two requests
never wait for each other in a cycle.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable

from tusd_py.errors import TusError
from tusd_py.locking.base import Lock, Locker, ReleaseRequest
from tusd_py.metrics import lock_wait


def _keep_going() -> None:
    """The release request of a holder that finishes quickly anyway (HEAD, DELETE, ...)."""


@contextlib.asynccontextmanager
async def held(
    locker: Locker, upload_id: str, on_release_request: ReleaseRequest = _keep_going
) -> AsyncIterator[Lock]:
    """Hold `upload_id`'s lock for the block; 423 when the holder does not hand over in time."""
    start = time.perf_counter()
    outcome = "error"
    try:
        lock = await locker.acquire(upload_id, on_release_request)
        outcome = "acquired"
    except TusError as exc:
        if exc.status == 423:
            outcome = "locked"
        raise
    finally:
        lock_wait(outcome).observe(time.perf_counter() - start)
    try:
        yield lock
    finally:
        await lock.release()


@contextlib.asynccontextmanager
async def all_held(locker: Locker, upload_ids: Iterable[str]) -> AsyncIterator[dict[str, Lock]]:
    """Hold the locks of all `upload_ids` (taken in sorted order), by upload id."""
    async with contextlib.AsyncExitStack() as stack:
        locks: dict[str, Lock] = {}
        for upload_id in sorted(set(upload_ids)):
            locks[upload_id] = await stack.enter_async_context(held(locker, upload_id))
        yield locks
