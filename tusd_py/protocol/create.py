"""POST: creation, creation-with-upload and creation-defer-length."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusd_py.errors import bad_request
from tusd_py.ids import new_upload_id
from tusd_py.info import UploadInfo
from tusd_py.metadata import parse_metadata
from tusd_py.protocol.body import check_content_type, content_length, has_body
from tusd_py.protocol.checksum import parse_checksum
from tusd_py.protocol.concat import create_final, parse_upload_concat
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.headers import parse_uint
from tusd_py.protocol.patch import offset_headers
from tusd_py.protocol.responses import tus_response
from tusd_py.protocol.uploads import (
    append,
    check_fits,
    check_max_size,
    complete_upload,
    discard,
    new_upload,
    new_upload_held,
)
from tusd_py.protocol.urls import endpoint_url
from tusd_py.stores.base import Capability


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
        check_can_defer(ctx, "send Upload-Length")
        return None
    if length_header is None:
        raise bad_request(
            "Upload-Length or Upload-Defer-Length: 1 is required", "missing-upload-length"
        )
    length = parse_uint("Upload-Length", length_header)
    check_max_size(ctx, length, f"Upload-Length {length}")
    return length


def check_can_defer(ctx: TusContext, instead: str) -> None:
    if Capability.DEFER_LENGTH not in ctx.capabilities:
        raise bad_request(
            f"this server's storage needs the length up front: {instead}", "defer-unsupported"
        )


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
    checksum = None
    if with_body:
        check_content_type(request)
        checksum = parse_checksum(
            request.headers.get("upload-checksum"), request.headers.get("trailer")
        )

    info = UploadInfo(
        id=new_upload_id(),
        length=length,
        metadata=metadata,
        metadata_header=metadata_header,
        expires_at=ctx.new_expiry(),
        concat=concat,
    )
    check_fits(info, content_length(request))
    if with_body:
        reader = ctx.open_body(request)
        async with new_upload_held(ctx, info, lambda: reader.stop("handover")) as lock:
            try:
                await append(ctx, info, lock, reader, checksum, last=True)
            except BaseException:
                # The client never learns the Location, so nobody could resume or delete it.
                await discard(ctx, info)
                raise
    else:
        await new_upload(ctx, info)
        if info.finished:
            await complete_upload(ctx, info, None)  # Upload-Length: 0 is complete at once
    # After the creation: a pre-create hook may have chosen the id.
    headers = {"Location": endpoint_url(request, ctx.config.behind_proxy) + info.id}
    headers.update(offset_headers(info))
    return tus_response(201, headers)
