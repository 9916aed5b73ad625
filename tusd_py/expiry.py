"""The background sweep that deletes unfinished uploads past their `Upload-Expires`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from tusd_py.errors import TusError
from tusd_py.locking.held import held
from tusd_py.protocol.context import TusContext, is_expired
from tusd_py.protocol.uploads import remove

log = logging.getLogger("tusd_py.expiry")


async def sweep_once(ctx: TusContext) -> int:
    """Delete every expired unfinished upload; returns how many went."""
    removed = 0
    now = time.time()
    async for upload_id in ctx.store.list_upload_ids():
        try:
            # The storage copy says whether an upload is finished without touching the state
            # store, so finished uploads are not pulled back into Redis by every sweep.
            stored = await ctx.store.load_info(upload_id)
            if stored is None or stored.finished:
                continue
            info = await ctx.state.get(upload_id)
            if info is None or not is_expired(info, now):
                continue
            async with held(ctx.locker, upload_id):
                info = await ctx.state.get(upload_id)
                if info is None or not is_expired(info, now):
                    continue  # a PATCH moved its expiry while we waited
                await remove(ctx, info)
                removed += 1
        except TusError as exc:
            log.warning("expiry sweep skipped %s: %s", upload_id, exc.message)
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
            log.info("expiry sweep removed %d expired uploads", removed)


@contextlib.asynccontextmanager
async def running_sweep(ctx: TusContext):  # type: ignore[no-untyped-def]
    if ctx.config.expiration <= 0:
        yield
        return
    task = asyncio.create_task(sweep_forever(ctx), name="tusd-expiry-sweep")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
