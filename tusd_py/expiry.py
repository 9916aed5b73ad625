"""The background sweep: deletes unfinished uploads past their `Upload-Expires` and, with
`--retain-finished`, finished uploads that long after they finished.

Its cost follows the uploads it may delete, not every upload kept: a store that can list its
unfinished uploads (`UnfinishedLister`) is asked for those only, and retention asks the store
for the uploads that finished before the cutoff (`FinishedRetainer`). A store that can do
neither is walked whole, reading each `.info`. Several instances may sweep one store: every
deletion takes the upload's lock and checks again under it. Under `--workers` only worker 0
sweeps: the others would walk the same directory or bucket for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from tusd_py.errors import TusError
from tusd_py.locking.held import held
from tusd_py.protocol.context import TusContext, is_expired
from tusd_py.protocol.uploads import remove
from tusd_py.stores.base import FinishedRetainer, UnfinishedLister
from tusd_py.workers import runs_host_wide_tasks

log = logging.getLogger("tusd_py.expiry")


async def _unfinished_candidates(ctx: TusContext, now: float) -> AsyncIterator[str]:
    """Ids of uploads that look unfinished and expired (re-checked under the lock)."""
    store = ctx.store
    if isinstance(store, UnfinishedLister):
        async for upload_id in store.list_unfinished_ids():
            info = await ctx.state.get(upload_id)
            if info is None or (info.finished and info.completed):
                await store.forget_unfinished(upload_id)  # a leftover of a crash or a race
            elif is_expired(info, now):
                yield upload_id
        return
    async for upload_id in store.list_upload_ids():
        # The storage copy says whether an upload is finished without touching the state
        # store, so finished uploads are not pulled back into Redis by every sweep.
        stored = await store.load_info(upload_id)
        if stored is None or stored.finished:
            continue
        info = await ctx.state.get(upload_id)
        if info is not None and is_expired(info, now):
            yield upload_id


async def _expire(ctx: TusContext, upload_id: str, now: float) -> bool:
    async with held(ctx.locker, upload_id):
        info = await ctx.state.get(upload_id)
        if info is None or not is_expired(info, now):
            return False  # a PATCH moved its expiry while we waited
        await remove(ctx, info)
        return True


async def _retire(ctx: TusContext, store: FinishedRetainer, upload_id: str, cutoff: float) -> bool:
    async with held(ctx.locker, upload_id):
        info = await ctx.state.get(upload_id)
        if info is None:
            return False
        finished_at = await store.finished_at(upload_id)
        if not info.completed or finished_at is None or finished_at >= cutoff:
            return False  # an id used again by a new upload
        if info.part_of is not None:
            final = await ctx.state.get(info.part_of)
            if final is not None and final.concat == "final" and not final.finished:
                return False  # an unfinished final still needs this partial's bytes
        await remove(ctx, info)
        return True


async def sweep_once(ctx: TusContext) -> int:
    """Delete every expired unfinished upload, and finished ones past `--retain-finished`;
    returns how many went."""
    removed = 0
    now = time.time()
    if ctx.config.expiration > 0:
        async for upload_id in _unfinished_candidates(ctx, now):
            try:
                removed += await _expire(ctx, upload_id, now)
            except TusError as exc:
                log.warning("expiry sweep skipped %s: %s", upload_id, exc.message)
    store = ctx.store
    if ctx.config.retain_finished > 0 and isinstance(store, FinishedRetainer):
        cutoff = now - ctx.config.retain_finished
        async for upload_id in store.list_finished_before(cutoff):
            try:
                removed += await _retire(ctx, store, upload_id, cutoff)
            except TusError as exc:
                log.warning("retention sweep skipped %s: %s", upload_id, exc.message)
    return removed


async def sweep_forever(ctx: TusContext) -> None:
    interval = ctx.config.expiration_sweep_interval
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await sweep_once(ctx)
        except Exception:
            log.exception("expiry sweep failed; trying again in %.0fs", interval)
            continue
        if removed:
            log.info("sweep removed %d uploads (expired, or past --retain-finished)", removed)


@contextlib.asynccontextmanager
async def running_sweep(ctx: TusContext):  # type: ignore[no-untyped-def]
    if ctx.config.expiration <= 0 and ctx.config.retain_finished <= 0:
        yield
        return
    if not runs_host_wide_tasks():  # under --workers, worker 0 sweeps for the host
        yield
        return
    task = asyncio.create_task(sweep_forever(ctx), name="tusd-expiry-sweep")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
