"""DELETE: the termination extension."""

from __future__ import annotations

from starlette.responses import Response

from tusd_py.locking.held import held
from tusd_py.protocol.concat import after_delete, check_deletable
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.responses import tus_response
from tusd_py.protocol.uploads import remove


async def handle_delete(ctx: TusContext, upload_id: str) -> Response:
    async with held(ctx.locker, upload_id) as lock:
        info = await ctx.existing(upload_id, lock)
        if info.part_of is not None:
            check_deletable(info, await ctx.state.get(info.part_of))
        await ctx.hooks.pre_terminate(info)  # may refuse
        await remove(ctx, info)
    ctx.hooks.terminated(info)
    await after_delete(ctx, info)
    return tus_response(204)
