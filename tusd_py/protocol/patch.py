"""PATCH: append the body at the upload's offset, streaming, under the upload's lock."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusd_py.errors import TusError, bad_request, offset_mismatch
from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock
from tusd_py.protocol.body import BodyReader
from tusd_py.protocol.checksum import Checksum, guarded, parse_checksum
from tusd_py.protocol.complete import complete_upload
from tusd_py.protocol.concat import after_finish
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.headers import http_date, parse_uint
from tusd_py.protocol.responses import tus_response

OFFSET_OCTET_STREAM = "application/offset+octet-stream"


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return None if value is None else parse_uint("Content-Length", value)


def has_body(request: Request) -> bool:
    length = content_length(request)
    return bool(length) or (
        length is None and "chunked" in request.headers.get("transfer-encoding", "")
    )


def open_body(ctx: TusContext, request: Request) -> BodyReader:
    """The request's body reader, registered so shutdown can end it and the endpoint can see
    whether the body was read to its end."""
    config = ctx.config
    reader = BodyReader(request.receive, None, config.read_timeout, config.body_min_rate)
    ctx.active_readers.add(reader)
    request.state.body_reader = reader
    return reader


def body_left_unread(request: Request) -> bool:
    """True when the client sent (or is sending) body bytes this request never read."""
    reader: BodyReader | None = getattr(request.state, "body_reader", None)
    if reader is not None and reader.complete:
        return False
    try:
        return has_body(request)
    except TusError:  # a malformed Content-Length: nobody can tell where the body ends
        return True


def check_content_type(request: Request, expected: str = OFFSET_OCTET_STREAM) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != expected:
        raise TusError(
            415,
            "invalid-content-type",
            f"Content-Type must be {expected}, got {media_type or 'nothing'!r}",
        )


def check_fits(ctx: TusContext, info: UploadInfo, body_length: int | None) -> None:
    """Reject a body that announces more bytes than the upload has room for, before reading it."""
    if body_length is not None and info.length is not None:
        room = info.length - info.offset
        if body_length > room:
            raise TusError(
                413,
                "body-too-large",
                f"the body has {body_length} bytes but only {room} remain before Upload-Length "
                f"({info.length})",
            )


def declare_length(ctx: TusContext, info: UploadInfo, value: str | None) -> bool:
    """Apply `Upload-Length` sent on a PATCH; True when a deferred length was just declared."""
    if value is None:
        return False
    length = parse_uint("Upload-Length", value)
    if info.length is not None:
        if length != info.length:
            raise bad_request(
                f"Upload-Length is already {info.length} and cannot change to {length}",
                "length-immutable",
            )
        return False
    if length < info.offset:
        raise bad_request(
            f"Upload-Length {length} is smaller than the {info.offset} bytes already received",
            "invalid-upload-length",
        )
    if ctx.config.max_size and length > ctx.config.max_size:
        raise TusError(
            413,
            "max-size-exceeded",
            f"Upload-Length {length} exceeds Tus-Max-Size {ctx.config.max_size}",
        )
    info.length = length
    return True


async def append(
    ctx: TusContext,
    info: UploadInfo,
    lock: Lock,
    reader: BodyReader,
    checksum: Checksum | None = None,
) -> None:
    """Stream the body into the store at `info.offset`, committing as bytes become durable.

    With a `checksum`, nothing is committed until the whole body has been verified.
    """
    room = None if info.length is None else info.length - info.offset
    if ctx.config.max_size and info.length is None:
        room = ctx.config.max_size - info.offset
    reader.limit = room
    info.expires_at = ctx.new_expiry()

    async def commit(offset: int) -> None:
        await ctx.state.commit(info, offset, lock)

    chunks, on_commit, guard = guarded(checksum, reader, ctx.state, info, lock, commit)
    async with ctx.hooks.receiving(ctx, info, reader):  # post-receive, byte count, StopUpload
        await ctx.store.write(info, chunks, on_commit)
        if guard is not None:
            await guard.apply()
    await complete_upload(ctx, info, lock)


def offset_headers(info: UploadInfo) -> dict[str, str]:
    headers = {"Upload-Offset": str(info.offset)}
    if info.expires_at is not None and not info.finished:
        headers["Upload-Expires"] = http_date(info.expires_at)
    return headers


async def handle_patch(ctx: TusContext, request: Request, upload_id: str) -> Response:
    check_content_type(request)
    offset_header = request.headers.get("upload-offset")
    if offset_header is None:
        raise bad_request("Upload-Offset is missing", "missing-upload-offset")
    offset = parse_uint("Upload-Offset", offset_header)
    body_length = content_length(request)
    checksum = parse_checksum(
        request.headers.get("upload-checksum"), request.headers.get("trailer")
    )

    reader = open_body(ctx, request)
    lock = await ctx.locker.acquire(upload_id, lambda: reader.stop("handover"))
    try:
        info = await ctx.existing(upload_id)
        if info.concat == "final":
            raise TusError(
                403, "final-upload", "a final upload of a concatenation cannot be patched"
            )
        if offset != info.offset:
            raise offset_mismatch(info.offset, offset)
        declared = declare_length(ctx, info, request.headers.get("upload-length"))
        check_fits(ctx, info, body_length)  # before saving: a rejected PATCH declares nothing
        if declared:
            await ctx.state.update(info, lock)
        if info.finished and not body_length:
            # Also retries a completion that failed after the last byte was committed.
            await complete_upload(ctx, info, lock)
        else:
            await append(ctx, info, lock, reader, checksum)
    finally:
        await lock.release()
    await after_finish(ctx, info)  # a claimed partial may complete its final upload
    return tus_response(204, offset_headers(info))
