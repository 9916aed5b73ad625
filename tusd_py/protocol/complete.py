"""Completing an upload in storage once its last byte is committed.

The committed offset reaching the length is not the end: the store may still have work to do
(S3 completes the multipart upload). That step can fail after the offset was committed, and a tus
client that then sees `Upload-Offset` equal to `Upload-Length` considers the upload done and
never sends another byte. So the step is recorded (`UploadInfo.completed`), and every later
request that touches the upload (HEAD, PATCH, GET) retries it until it succeeds; only then does
post-finish run.
"""

from __future__ import annotations

from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock
from tusd_py.protocol.context import TusContext


async def complete_upload(ctx: TusContext, info: UploadInfo, lock: Lock | None) -> None:
    """Finish a fully received upload in storage, record that, and run post-finish; does
    nothing for an upload already completed. Call it holding the upload's lock (or, for an
    upload nobody else knows yet, with `lock=None`)."""
    if info.completed or not info.finished:
        return
    await ctx.store.finish(info)  # idempotent: a retry after a failure is safe
    info.completed = True
    await ctx.state.update(info, lock)
    await ctx.hooks.finished(info)


async def completed_info(ctx: TusContext, upload_id: str) -> UploadInfo:
    """The upload's info, completing it first if its last bytes arrived but completion failed."""
    info = await ctx.existing(upload_id)
    if info.finished and not info.completed:
        lock = await ctx.locker.acquire(upload_id, lambda: None)
        try:
            info = await ctx.existing(upload_id)
            await complete_upload(ctx, info, lock)
        finally:
            await lock.release()
    return info
