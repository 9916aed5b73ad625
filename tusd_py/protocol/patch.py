"""PATCH: append the body at the upload's offset, streaming, under the upload's lock."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusd_py.errors import TusError, bad_request, offset_mismatch
from tusd_py.info import UploadInfo
from tusd_py.locking.held import held
from tusd_py.protocol.body import check_content_type, content_length
from tusd_py.protocol.checksum import parse_checksum
from tusd_py.protocol.concat import after_finish
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.headers import http_date, parse_uint
from tusd_py.protocol.responses import tus_response
from tusd_py.protocol.uploads import append, check_fits, complete_upload, declare_length


def invalid_length(message: str) -> TusError:
    return bad_request(message, "invalid-upload-length")


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
    length_header = request.headers.get("upload-length")
    length = None if length_header is None else parse_uint("Upload-Length", length_header)
    checksum = parse_checksum(
        request.headers.get("upload-checksum"), request.headers.get("trailer")
    )

    reader = ctx.open_body(request)
    async with held(ctx.locker, upload_id, lambda: reader.stop("handover")) as lock:
        info = await ctx.existing(upload_id, lock)
        if info.concat == "final":
            raise TusError(
                403, "final-upload", "a final upload of a concatenation cannot be patched"
            )
        if offset != info.offset:
            raise offset_mismatch(info.offset, offset)
        declared = length is not None and await declare_length(
            ctx, info, length, invalid_length, "Upload-Length"
        )
        check_fits(info, body_length)  # before saving: a rejected PATCH declares nothing
        if declared:
            await ctx.state.update(info, lock)
        if info.finished and not body_length:
            # Also retries a completion that failed after the last byte was committed.
            await complete_upload(ctx, info, lock, last=True)
        else:
            await append(ctx, info, lock, reader, checksum, last=True)
    await after_finish(ctx, info)  # a claimed partial may complete its final upload
    return tus_response(204, offset_headers(info))
