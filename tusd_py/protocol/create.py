"""POST: creation, creation-with-upload and creation-defer-length."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from tusd_py.errors import TusError, bad_request
from tusd_py.ids import new_upload_id
from tusd_py.info import UploadInfo
from tusd_py.protocol.complete import complete_upload
from tusd_py.protocol.concat import create_final, parse_upload_concat
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.headers import parse_metadata, parse_uint
from tusd_py.protocol.patch import (
    append,
    check_content_type,
    check_fits,
    content_length,
    has_body,
    offset_headers,
    open_body,
)
from tusd_py.protocol.responses import tus_response
from tusd_py.protocol.urls import endpoint_url
from tusd_py.stores.base import Capability

log = logging.getLogger("tusd_py")


def parse_length(ctx: TusContext, request: Request) -> int | None:
    """The declared length, or None for a deferred one."""
    length_header = request.headers.get("upload-length")
    defer_header = request.headers.get("upload-defer-length")
    if length_header is not None and defer_header is not None:
        raise bad_request("send either Upload-Length or Upload-Defer-Length, not both")
    if defer_header is not None:
        if defer_header != "1":
            raise bad_request(
                f"Upload-Defer-Length must be 1, got {defer_header!r}", "invalid-defer-length"
            )
        if Capability.DEFER_LENGTH not in ctx.capabilities:
            raise bad_request(
                "this server does not support deferred upload lengths", "defer-unsupported"
            )
        return None
    if length_header is None:
        raise bad_request(
            "Upload-Length or Upload-Defer-Length: 1 is required", "missing-upload-length"
        )
    length = parse_uint("Upload-Length", length_header)
    if ctx.config.max_size and length > ctx.config.max_size:
        raise TusError(
            413,
            "max-size-exceeded",
            f"Upload-Length {length} exceeds Tus-Max-Size {ctx.config.max_size}",
        )
    return length


def parse_metadata_header(ctx: TusContext, request: Request) -> tuple[str | None, dict[str, str]]:
    raw = request.headers.get("upload-metadata")
    if raw is None:
        return None, {}
    if len(raw) > ctx.config.max_metadata_size:
        raise bad_request(
            f"Upload-Metadata is {len(raw)} bytes; the limit is {ctx.config.max_metadata_size}",
            "metadata-too-large",
        )
    return raw, parse_metadata(raw)


async def discard(ctx: TusContext, info: UploadInfo) -> None:
    try:
        await ctx.store.terminate(info)
        await ctx.state.delete(info.id)
    except Exception:
        log.warning("could not remove upload %s after a failed creation", info.id, exc_info=True)


async def handle_create(ctx: TusContext, request: Request) -> Response:
    concat = parse_upload_concat(ctx, request.headers.get("upload-concat"))
    if isinstance(concat, list):
        metadata_header, metadata = parse_metadata_header(ctx, request)
        return await create_final(
            ctx, request, concat, metadata_header, metadata, has_body(request)
        )
    length = parse_length(ctx, request)
    metadata_header, metadata = parse_metadata_header(ctx, request)
    with_body = has_body(request)
    if with_body:
        check_content_type(request)

    info = UploadInfo(
        id=new_upload_id(),
        length=length,
        metadata=metadata,
        metadata_header=metadata_header,
        expires_at=ctx.new_expiry(),
        concat=concat,
    )
    check_fits(ctx, info, content_length(request))
    await ctx.hooks.pre_create(info)  # may reject, or change the id and metadata
    await ctx.store.create(info)
    await ctx.state.create(info)
    ctx.hooks.created(info)

    headers = {"Location": endpoint_url(request, ctx.config.behind_proxy) + info.id}
    if with_body:
        reader = open_body(ctx, request)
        lock = await ctx.locker.acquire(info.id, lambda: reader.stop("handover"))
        try:
            await append(ctx, info, lock, reader)
        except BaseException:
            # The client never learns the Location, so nobody could resume or delete it.
            await discard(ctx, info)
            raise
        finally:
            await lock.release()
    elif info.finished:
        await complete_upload(ctx, info, None)  # Upload-Length: 0 is complete at once
    headers.update(offset_headers(info))
    return tus_response(201, headers)
