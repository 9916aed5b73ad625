"""DELETE: the termination extension."""

from __future__ import annotations

from starlette.responses import Response

from tusd_py.errors import TusError
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.responses import tus_response
from tusd_py.stores.base import Capability


async def handle_delete(ctx: TusContext, upload_id: str) -> Response:
    if Capability.TERMINATION not in ctx.capabilities:
        raise TusError(405, "termination-unsupported", "this server does not support termination")
    lock = await ctx.locker.acquire(upload_id, lambda: None)
    try:
        info = await ctx.existing(upload_id)
        await ctx.hooks.pre_terminate(info)  # may refuse
        await ctx.store.terminate(info)
        await ctx.state.delete(upload_id)
    finally:
        await lock.release()
    ctx.hooks.terminated(info)
    return tus_response(204)
