"""What tus 1.0.0 and the IETF draft share about an upload's life.

Creating it (hooks, store, state, in that order), declaring its length, checking that a body has
room, streaming a body into it, completing it once its last byte is committed, and removing it.
The handlers (create, patch, concat, ietf, delete, head) parse their own headers and call these.

Completion: the committed offset reaching the length is not the end. The store may still have
work to do (S3 completes the multipart upload), and that step can fail after the offset was
committed; a tus client that then sees `Upload-Offset` equal to `Upload-Length` considers the
upload done and never sends another byte. So the step is recorded (`UploadInfo.completed`), and
every later request that touches the upload (HEAD, PATCH, GET) retries it until it succeeds; only
then does post-finish run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from tusd_py.errors import TusError, gone, not_found
from tusd_py.hooks import HookType, UploadStopped
from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock, ReleaseRequest
from tusd_py.locking.held import held
from tusd_py.protocol.body import BodyReader
from tusd_py.protocol.checksum import Checksum, guarded
from tusd_py.protocol.context import TusContext, is_direct_record, is_expired
from tusd_py.request_context import bind_upload
from tusd_py.stores.base import LengthDeferrer

log = logging.getLogger("tusd_py")

Refusal = Callable[[str], TusError]


def too_large(message: str) -> TusError:
    return TusError(413, "max-size-exceeded", message)


def check_max_size(ctx: TusContext, length: int, what: str) -> None:
    """413 when `what` (e.g. "Upload-Length 12") is more than the server accepts."""
    if ctx.config.max_size and length > ctx.config.max_size:
        raise too_large(f"{what} exceeds Tus-Max-Size {ctx.config.max_size}")


def body_too_large(message: str) -> TusError:
    return TusError(413, "body-too-large", message)


def check_fits(info: UploadInfo, body_length: int | None, refuse: Refusal = body_too_large) -> None:
    """Reject a body that announces more bytes than the upload has room for, before reading it."""
    if body_length is not None and info.length is not None:
        room = info.length - info.offset
        if body_length > room:
            raise refuse(
                f"the body has {body_length} bytes but only {room} remain before the upload's "
                f"length ({info.length})"
            )


async def declare_length(
    ctx: TusContext, info: UploadInfo, length: int, refuse: Refusal, what: str
) -> bool:
    """Set the length of an upload created without one; True when it was unknown until now.

    `refuse` makes the error for a length that contradicts the upload (each protocol words and
    codes it its own way); `what` names the length in messages. The caller persists the info.
    """
    if info.length is not None:
        if info.length != length:
            raise refuse(f"the upload's length is {info.length} and cannot change to {length}")
        return False
    if length < info.offset:
        raise refuse(f"{what} is {length}, but {info.offset} bytes are already stored")
    check_max_size(ctx, length, f"{what} {length}")
    info.length = length
    store = ctx.store
    if isinstance(store, LengthDeferrer):
        await store.declare_length(info)
    return True


async def new_upload(ctx: TusContext, info: UploadInfo) -> None:
    """Create `info` everywhere: pre-create (may reject, or change the id and metadata), the
    store, the state, then post-create."""
    await _new_in_store(ctx, info)
    await ctx.state.create(info)
    ctx.hooks.created(info)


@contextlib.asynccontextmanager
async def new_upload_held(
    ctx: TusContext, info: UploadInfo, on_release_request: ReleaseRequest
) -> AsyncIterator[Lock]:
    """`new_upload`, holding the new upload's lock for the block (a creation with a body): the
    state is written and the lock taken in one step (one Redis round trip), before
    post-create, so the body's first commit never waits for another request."""
    await _new_in_store(ctx, info)
    lock = await ctx.state.create_held(info, ctx.locker, on_release_request)
    try:
        ctx.hooks.created(info)
        yield lock
    finally:
        await lock.release()


async def _new_in_store(ctx: TusContext, info: UploadInfo) -> None:
    """pre-create, then the store's side of a new upload."""
    bind_upload(info.id)  # the log lines that follow name it (the hook's failure too)
    await ctx.hooks.pre_create(info)
    bind_upload(info.id)  # the hook may have chosen another id
    refused = set(info.storage) - ctx.store.storage_choices
    if refused:
        # Where bytes go is the application's answer, not the client's: a 500 that says why.
        raise TusError(
            500,
            "hook-invalid-storage",
            f"the pre-create hook chose ChangeFileInfo.Storage.{sorted(refused)[0]}, which "
            f"this server's storage ({ctx.store.storage_type}) does not take",
            operation="pre-create hook",
        )
    await ctx.store.create(info)


async def remove(ctx: TusContext, info: UploadInfo) -> None:
    """Delete the upload's bytes and state (held lock, or nobody else knows the upload)."""
    await ctx.store.terminate(info)
    await ctx.state.delete(info.id)


async def discard(ctx: TusContext, info: UploadInfo) -> None:
    """`remove` an upload whose creation failed; the creation's own error is what the client
    hears, so a failure here is only logged."""
    try:
        await remove(ctx, info)
    except Exception:
        log.warning("could not remove upload %s after a failed creation", info.id, exc_info=True)


async def append(
    ctx: TusContext,
    info: UploadInfo,
    lock: Lock,
    reader: BodyReader,
    checksum: Checksum | None = None,
    *,
    last: bool = False,
) -> None:
    """Stream the body into the store at `info.offset`, committing as bytes become durable.

    With a `checksum`, nothing is committed until the whole body has been verified. `last`: the
    caller needs neither the lock nor the state afterwards, so the final commit of an upload
    that is not finished by it may release the lock in the same step (one Redis round trip).
    """
    room = None if info.length is None else info.length - info.offset
    if ctx.config.max_size and info.length is None:
        room = ctx.config.max_size - info.offset
    reader.limit = room
    info.expires_at = ctx.new_expiry()

    async def commit(offset: int) -> None:
        await ctx.state.commit(info, offset, lock)

    chunks, on_commit, guard = guarded(checksum, reader, ctx.state, info, lock, commit)
    # With post-receive hooks the final commit stays inside `receiving`: the hook reports the
    # committed offset, and a stop it asks for removes the upload under the lock.
    carry = last and not ctx.hooks.enabled(HookType.POST_RECEIVE)
    carried: int | None = None
    try:
        async with ctx.hooks.receiving(info, reader):  # post-receive, byte count, StopUpload
            end = await ctx.store.write(info, chunks, on_commit)
            if guard is not None:
                await guard.apply()
            # What the store left for us to commit (stores/base.py: `write`).
            if end > info.offset and (guard is None or guard.verified):
                if carry and (info.length is None or end < info.length):
                    carried = end
                else:
                    await commit(end)
    except UploadStopped as stopped:
        await remove(ctx, info)
        ctx.hooks.terminated(info)
        raise stopped.error from None
    if carried is not None:
        await ctx.state.commit_and_release(info, carried, lock)
        return
    await complete_upload(ctx, info, lock, last=last)


async def complete_upload(
    ctx: TusContext, info: UploadInfo, lock: Lock | None, *, last: bool = False
) -> None:
    """Finish a fully received upload in storage, record that, and run post-finish; does
    nothing for an upload already completed. Call it holding the upload's lock (or, for an
    upload nobody else knows yet, with `lock=None`).

    `last`: the caller needs neither the lock nor the state afterwards, so the completion's
    write may release the lock in the same step (one Redis round trip) — unless a pre-finish
    hook is configured, which runs holding the lock as it always has."""
    if info.completed or not info.finished:
        return
    await ctx.store.finish(info)  # idempotent: a retry after a failure is safe
    info.completed = True
    info.completed_at = time.time()
    if last and lock is not None and not ctx.hooks.enabled(HookType.PRE_FINISH):
        await ctx.state.update_and_release(info, lock)
    else:
        await ctx.state.update(info, lock)
    await ctx.hooks.finished(info)  # after the state says completed


async def current_info(ctx: TusContext, upload_id: str) -> UploadInfo:
    """The upload's info for a reader (HEAD, offset retrieval), without taking its lock.

    A request still holding the lock (a PATCH whose client resumed) is asked to let go and is
    waited for, so it commits first: the offset answered is then the one the client can resume
    from. Readers of one upload never wait for each other. An upload whose last bytes arrived but
    whose completion failed is completed first, under the lock (only then is it taken)."""
    state = ctx.state
    reader = ctx.holder_reader
    if reader is not None:
        info, holder = await reader.get_with_holder(upload_id)  # one round trip with Redis
    else:
        holder = await ctx.locker.holder(upload_id)
        info = await state.get(upload_id)
    if holder is not None:
        await ctx.locker.let_go(upload_id, holder)
        info = await state.get(upload_id)
    if info is None or is_direct_record(info):
        raise not_found(upload_id)
    if is_expired(info):
        raise gone(upload_id)
    if info.finished and not info.completed:
        async with held(ctx.locker, upload_id) as lock:
            info = await ctx.existing(upload_id, lock)
            await complete_upload(ctx, info, lock)
    return info


async def completed_info(ctx: TusContext, upload_id: str) -> UploadInfo:
    """The upload's info, completing it first if its last bytes arrived but completion failed;
    takes the lock only in that case (downloads of finished uploads need none)."""
    info = await ctx.existing(upload_id)
    if info.finished and not info.completed:
        async with held(ctx.locker, upload_id) as lock:
            info = await ctx.existing(upload_id, lock)
            await complete_upload(ctx, info, lock)
    return info
