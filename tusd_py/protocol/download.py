"""GET: stream a finished upload, with Range, a safe Content-Type and Content-Disposition.

An upload's bytes come from strangers, so nothing is ever served in a way a browser would run as
HTML or script from this origin: only media types known to be inert are shown inline, everything
else is an attachment, and `nosniff` plus a sandboxing CSP back that up.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tusd_py.content_headers import content_disposition, content_type, response_type
from tusd_py.errors import TusError
from tusd_py.protocol.abort import abort_connection
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.headers import TUS_VERSION
from tusd_py.protocol.uploads import completed_info

log = logging.getLogger("tusd_py.download")

_RANGE = re.compile(r"bytes=(?P<start>[0-9]*)-(?P<end>[0-9]*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single byte range as (start, end-exclusive); None means 'send everything'.

    Multiple or malformed ranges are ignored (RFC 9110 allows that); an unsatisfiable one is 416.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match["start"] and not match["end"]):
        return None
    if not match["start"]:
        suffix = _range_number(match["end"])
        if suffix == 0:
            raise _unsatisfiable(size)
        # No byte range can describe part of nothing: an empty upload is sent whole.
        return (max(0, size - suffix), size) if size else None
    start = _range_number(match["start"])
    if match["end"] and _range_number(match["end"]) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    end = _range_number(match["end"]) + 1 if match["end"] else size
    return start, min(end, size)


def _range_number(digits: str) -> int:
    """Range numbers past any upload's size are all alike; int() refuses thousands of digits."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else 10**20


def _unsatisfiable(size: int) -> TusError:
    return TusError(
        416,
        "range-not-satisfiable",
        f"the upload has {size} bytes",
        {"Content-Range": f"bytes */{size}"},
    )


async def handle_download(ctx: TusContext, request: Request, upload_id: str) -> Response:
    store = ctx.reader
    if store is None:
        raise TusError(405, "download-unsupported", "this server does not serve uploads back")
    info = await completed_info(ctx, upload_id)
    if not info.finished:
        raise TusError(
            409,
            "upload-unfinished",
            f"upload {upload_id!r} is not finished yet ({info.offset} of "
            f"{'an unknown number of' if info.length is None else info.length} bytes received)",
        )
    size = info.length or 0
    media_type = content_type(info)
    disposition = content_disposition(info, media_type)
    media_type = response_type(media_type)  # one header for both ways of serving it
    redirector = ctx.redirector
    if request.method == "GET" and redirector is not None:
        url = await redirector.download_url(info, media_type, disposition)
        if url is not None:
            # The client sends its Range to the storage service, which answers it itself.
            return Response(
                b"",
                status_code=302,
                headers={
                    "Tus-Resumable": TUS_VERSION,
                    "Location": url,
                    "Cache-Control": "no-store",
                },
            )
    headers = {
        "Tus-Resumable": TUS_VERSION,
        "Accept-Ranges": "bytes",
        "Content-Disposition": disposition,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "no-store",
    }
    byte_range = parse_range(request.headers.get("range"), size)
    status = 200
    start, end = 0, size
    if byte_range is not None:
        start, end = byte_range
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD" or start == end:
        return Response(b"", status_code=status, headers=headers, media_type=media_type)
    body = await started(store.read(info, start, end), request, upload_id)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=media_type)


async def started(
    chunks: AsyncIterator[bytes], request: Request, upload_id: str
) -> AsyncIterator[bytes]:
    """`chunks` with its first chunk already read: a store that fails to open the bytes (S3
    unreachable) still gets a proper error response, not a 200 whose body breaks off at once.

    A failure after the response started cannot become an error response any more: it is logged
    once with its cause and the connection is closed, so the client sees a body shorter than its
    Content-Length (an error to every HTTP client) rather than a silently truncated file."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""

    async def rest() -> AsyncIterator[bytes]:
        yield first
        try:
            async for chunk in chunks:
                yield chunk
        except Exception as exc:
            abort = abort_connection(request.scope)
            if abort is None:
                raise  # not under our uvicorn protocol: the ASGI server closes it
            log.error(
                "GET of upload %r broke off mid-body, closing the connection: %s",
                upload_id,
                getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}",
            )
            abort()

    return rest()
