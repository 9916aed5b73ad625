"""The pre-access hook's call site: before a request reads or writes an existing upload.

Called once the upload id is parsed and before the handler takes a lock, opens the body or
changes anything, so a refusal leaves the upload exactly as it was. Only when the hook is
enabled does it cost anything: one state read for the upload's info, and the hook itself.
"""

from __future__ import annotations

from tusd_py.hooks import AccessMode, HookType
from tusd_py.protocol.context import TusContext

# tusd PR #1077: HEAD and GET read an upload, PATCH and DELETE write it.
ACCESS_MODES: dict[str, AccessMode] = {
    "HEAD": "read",
    "GET": "read",
    "PATCH": "write",
    "DELETE": "write",
}


async def check_access(ctx: TusContext, upload_id: str, method: str) -> None:
    """Raise the hook's refusal (403 by default); 404/410 for an unknown or expired upload."""
    mode = ACCESS_MODES.get(method)
    if mode is None or not ctx.hooks.enabled(HookType.PRE_ACCESS):
        return
    info = await ctx.existing(upload_id)
    await ctx.hooks.pre_access(info, mode)
