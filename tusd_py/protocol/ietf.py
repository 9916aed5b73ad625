"""IETF "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload) on the tus endpoint.

A request carrying `Upload-Draft-Interop-Version` is handled here; everything else is tus 1.0.0.
Both protocols share the uploads, the locks and the streaming `append()`, so an upload can be
inspected or downloaded either way.

Interop versions 3 to 9 (drafts -01 to -12):
    3       `Upload-Incomplete` (inverted) instead of `Upload-Complete`; an absent one = complete
    4, 5    `Upload-Complete`; append responses 201
    6       PATCH must be `application/partial-upload`; `Upload-Limit`; `Upload-Length`; the
            last drafts that make HEAD/DELETE with `Upload-Offset` or the completeness field 400
    7, 8    `Upload-Complete` required on PATCH; append responses 204; `max-age` limit;
            8 (drafts -10, -11) also requires `Accept-Patch` on OPTIONS
    9       GET on an upload is an offset retrieval; every creation or append response, errors
            included, says `Upload-Complete: ?0` unless the upload is complete

Mapping onto tus: an upload is complete when its length is known and reached. `Upload-Length`
and, on a request with `Upload-Complete: ?1`, `Content-Length` declare the length up front; a
completing request without `Content-Length` declares it as the offset it ends at. So a client
that sends all bytes with `?0` has completed the upload too; a later empty `?1` append is
answered as a success.

Not done: `104 (Upload Resumption Supported)` interim responses. ASGI offers no way to send an
arbitrary 1xx (only `http.response.early_hint`, which is a 103 with `Link` headers, and only on
uvicorn's HTTP/2 path); uvicorn's HTTP/1.1 protocols send none. Clients learn the upload URL from
the 201 of a creation request instead, which every interop version allows.
"""

from __future__ import annotations

import email.message
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from tusd_py.errors import TusError, bad_request, offset_mismatch
from tusd_py.ids import is_valid_upload_id, new_upload_id
from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock
from tusd_py.locking.held import held
from tusd_py.metadata import encode_metadata
from tusd_py.protocol.access import check_access
from tusd_py.protocol.body import (
    OFFSET_OCTET_STREAM,
    BodyReader,
    check_content_type,
    content_length,
    has_body,
)
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.create import check_can_defer, parse_metadata_header
from tusd_py.protocol.delete import handle_delete
from tusd_py.protocol.download import handle_download
from tusd_py.protocol.headers import parse_uint
from tusd_py.protocol.uploads import (
    append,
    check_fits,
    check_max_size,
    complete_upload,
    current_info,
    declare_length,
    discard,
    new_upload_held,
)
from tusd_py.protocol.urls import endpoint_url

INTEROP_HEADER = "upload-draft-interop-version"
VERSIONS = range(3, 10)
PARTIAL_UPLOAD = "application/partial-upload"
# Creation is any request with content to the endpoint (the drafts name POST, PUT and PATCH).
CREATION_METHODS = ("POST", "PUT", "PATCH")


@dataclass(frozen=True)
class Draft:
    version: int

    @property
    def complete_header(self) -> str:
        return "Upload-Incomplete" if self.version == 3 else "Upload-Complete"

    def complete_field(self, complete: bool) -> dict[str, str]:
        if self.version == 3:
            return {"Upload-Incomplete": "?0" if complete else "?1"}
        return {"Upload-Complete": "?1" if complete else "?0"}

    def parse_complete(self, request: Request, *, required: bool) -> bool:
        """Whether the request ends the upload; a 400 when the field is malformed or missing."""
        raw = request.headers.get(self.complete_header.lower())
        if raw is None:
            if self.version == 3:
                return True  # draft -01: an absent Upload-Incomplete means the upload ends here
            if required:
                raise bad_request(
                    f"{self.complete_header}: ?0 or ?1 is required", "missing-upload-complete"
                )
            return False
        if raw.strip() not in ("?0", "?1"):
            raise bad_request(
                f"{self.complete_header} must be ?0 or ?1, got {raw!r}", "invalid-upload-complete"
            )
        value = raw.strip() == "?1"
        return not value if self.version == 3 else value

    @property
    def refuses_state_fields_on_reads(self) -> bool:
        """Drafts up to -05 answer 400 to HEAD and DELETE with `Upload-Offset` or the completeness
        field (HEAD also `Upload-Length`, from 6); later drafts drop the rule: they are ignored."""
        return self.version <= 6

    @property
    def labels_every_response(self) -> bool:
        """From 9 (draft -12) `Upload-Complete` on a creation or append response says whether the
        response comes from the resumable-upload protocol (?0) or the finished upload (?1)."""
        return self.version >= 9


def interop_version(request: Request) -> Draft:
    raw = request.headers[INTEROP_HEADER].strip()
    # isdigit() alone also accepts "²", which int() refuses; 15 digits is a structured integer.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 15) or int(raw) not in VERSIONS:
        raise bad_request(
            f"Upload-Draft-Interop-Version {raw!r} is not supported; this server speaks "
            f"{VERSIONS.start} to {VERSIONS.stop - 1}",
            "unsupported-interop-version",
        )
    return Draft(int(raw))


def upload_limit(ctx: TusContext, draft: Draft, info: UploadInfo | None = None) -> dict[str, str]:
    if draft.version < 6:
        return {}
    limits = ["min-size=0"]
    if ctx.config.max_size:
        limits.append(f"max-size={ctx.config.max_size}")
    if info is not None and info.expires_at is not None and not info.finished:
        remaining = max(0, int(info.expires_at - time.time()))
        limits.append(f"{'expires' if draft.version == 6 else 'max-age'}={remaining}")
    return {"Upload-Limit": ",".join(limits)}


def state_headers(ctx: TusContext, draft: Draft, info: UploadInfo) -> dict[str, str]:
    headers = {"Upload-Offset": str(info.offset), **draft.complete_field(info.finished)}
    if info.length is not None:
        headers["Upload-Length"] = str(info.length)
    headers.update(upload_limit(ctx, draft, info))
    return headers


def response(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(b"", status_code=status, headers=headers)


def inconsistent_length(message: str) -> TusError:
    return bad_request(message, "inconsistent-upload-length")


def reject_fields(request: Request, names: tuple[str, ...], what: str) -> None:
    for name in names:
        if name.lower() in request.headers:
            raise bad_request(f"{what} must not carry {name}", "unexpected-field")


def representation_metadata(request: Request) -> dict[str, str]:
    """Metadata from the creation request's representation headers, for clients without
    Upload-Metadata: Content-Type as `filetype`, the Content-Disposition filename as `filename`."""
    metadata: dict[str, str] = {}
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type and media_type not in (PARTIAL_UPLOAD, OFFSET_OCTET_STREAM):
        metadata["filetype"] = media_type
    disposition = request.headers.get("content-disposition")
    if disposition:
        message = email.message.Message()
        message["content-disposition"] = disposition
        filename = message.get_filename()
        if filename:
            metadata["filename"] = filename
    return metadata


async def declare(ctx: TusContext, info: UploadInfo, length: int) -> bool:
    """Record the upload's final length; True when it was unknown until now."""
    return await declare_length(ctx, info, length, inconsistent_length, "the upload's length")


def implied_length(request: Request, offset: int, complete: bool) -> int | None:
    """The length `Upload-Length` and, when completing, `Content-Length` say; they must agree."""
    declared = request.headers.get("upload-length")
    length = None if declared is None else parse_uint("Upload-Length", declared)
    body_length = content_length(request)
    if complete and body_length is not None:
        if length is not None and length != offset + body_length:
            raise inconsistent_length(
                f"Upload-Length is {length} but this completing request ends at "
                f"{offset + body_length}"
            )
        length = offset + body_length
    return length


def stopper(reader: BodyReader | None) -> Callable[[], None]:
    """What a request asking for this upload's lock makes us do: stop reading the body."""
    if reader is None:
        return lambda: None
    return lambda: reader.stop("handover")


async def transfer(
    ctx: TusContext, info: UploadInfo, lock: Lock, reader: BodyReader | None, complete: bool
) -> None:
    """Append the body (if any); a request that completes the upload and arrived whole fixes
    the length at the offset it reached."""
    if reader is not None:
        try:
            await append(ctx, info, lock, reader)
        except TusError as exc:
            if exc.code == "body-too-large":  # the drafts answer 400 for bytes past the length
                raise inconsistent_length(exc.message) from None
            raise
    if not complete or (reader is not None and not reader.complete):
        return
    if info.length is None:
        await declare(ctx, info, info.offset)
        await ctx.state.update(info, lock)
        await complete_upload(ctx, info, lock)
    elif info.offset != info.length:
        raise inconsistent_length(
            f"the upload was completed at offset {info.offset}, but its length is {info.length}"
        )


async def handle_ietf(ctx: TusContext, request: Request, method: str, upload_id: str) -> Response:
    draft = interop_version(request)
    try:
        return await dispatch(ctx, request, draft, method, upload_id)
    except TusError as error:
        add_draft_fields(ctx, draft, method, error)
        raise


def add_draft_fields(ctx: TusContext, draft: Draft, method: str, error: TusError) -> None:
    """The fields the draft asks for on an error: `Upload-Limit` on a 413 caused by the limits
    (from 6), and from 9 `Upload-Complete: ?0` on a failed creation or append (the answer is the
    resumable-upload protocol's, not the finished upload's)."""
    if error.status == 413:
        for name, value in upload_limit(ctx, draft).items():
            error.headers.setdefault(name, value)
    if draft.labels_every_response and method in CREATION_METHODS:
        for name, value in draft.complete_field(False).items():
            error.headers.setdefault(name, value)


async def dispatch(
    ctx: TusContext, request: Request, draft: Draft, method: str, upload_id: str
) -> Response:
    if method == "OPTIONS":
        return options(ctx, draft)
    if upload_id == "":
        if method not in CREATION_METHODS:
            raise TusError(405, "method-not-allowed", f"{method} is not allowed here")
        return await create(ctx, request, draft)
    if not is_valid_upload_id(upload_id):
        raise TusError(404, "upload-not-found", "the path does not name an upload")
    await check_access(ctx, upload_id, method)  # HEAD, PATCH, DELETE, GET; before any lock
    if method == "HEAD" or (method == "GET" and draft.version >= 9):
        return await offset_retrieval(ctx, request, draft, upload_id)
    if method == "PATCH":
        return await upload_append(ctx, request, draft, upload_id)
    if method == "DELETE":
        if draft.refuses_state_fields_on_reads:
            reject_fields(request, ("Upload-Offset", draft.complete_header), "a cancellation")
        return await handle_delete(ctx, upload_id)
    if method == "GET":
        return await handle_download(ctx, request, upload_id)
    raise TusError(405, "method-not-allowed", f"{method} is not allowed on an upload")


def options(ctx: TusContext, draft: Draft) -> Response:
    headers = {"Allow": ", ".join(("OPTIONS", *CREATION_METHODS)), **upload_limit(ctx, draft)}
    if draft.version == 8:  # required by drafts -10 and -11, dropped again in -12
        headers["Accept-Patch"] = PARTIAL_UPLOAD
    return response(204, headers)


async def create(ctx: TusContext, request: Request, draft: Draft) -> Response:
    complete = draft.parse_complete(request, required=True)
    reject_fields(request, ("Upload-Offset",), "a creation request")
    with_body = has_body(request)
    length = implied_length(request, 0, complete)
    if complete and not with_body:
        if length not in (None, 0):
            raise inconsistent_length(
                f"Upload-Length is {length} but the request completes the upload without a body"
            )
        length = 0
    metadata_header, metadata = parse_metadata_header(ctx, request)
    if metadata_header is None:
        metadata = representation_metadata(request)
        metadata_header = encode_metadata(metadata) if metadata else None
    if length is None:
        check_can_defer(ctx, "send Upload-Length")
    if length is not None:
        check_max_size(ctx, length, f"the upload's length {length}")
    info = UploadInfo(
        id=new_upload_id(),
        length=length,
        metadata=metadata,
        metadata_header=metadata_header,
        expires_at=ctx.new_expiry(),
    )
    reader = ctx.open_body(request) if with_body else None
    async with new_upload_held(ctx, info, stopper(reader)) as lock:
        try:
            if info.finished:
                await complete_upload(ctx, info, lock)  # an empty upload is complete at once
            else:
                await transfer(ctx, info, lock, reader, complete)
        except BaseException:
            # No 104 went out, so the client never learns this upload's URL: leave nothing.
            await discard(ctx, info)
            raise
    headers = {"Location": endpoint_url(request, ctx.config.behind_proxy) + info.id}
    headers.update(state_headers(ctx, draft, info))
    return response(201, headers)


async def offset_retrieval(
    ctx: TusContext, request: Request, draft: Draft, upload_id: str
) -> Response:
    if draft.refuses_state_fields_on_reads:
        forbidden: tuple[str, ...] = ("Upload-Offset", draft.complete_header)
        if draft.version >= 6:
            forbidden += ("Upload-Length",)
        reject_fields(request, forbidden, "an offset retrieval")
    info = await current_info(ctx, upload_id)  # a running append is asked to commit first
    return response(204, {**state_headers(ctx, draft, info), "Cache-Control": "no-store"})


async def upload_append(
    ctx: TusContext, request: Request, draft: Draft, upload_id: str
) -> Response:
    if draft.version >= 6:
        check_content_type(request, PARTIAL_UPLOAD)
    offset_header = request.headers.get("upload-offset")
    if offset_header is None:
        raise bad_request("Upload-Offset is missing", "missing-upload-offset")
    offset = parse_uint("Upload-Offset", offset_header)
    complete = draft.parse_complete(request, required=draft.version >= 7)
    with_body = has_body(request)
    length = implied_length(request, offset, complete)

    reader = ctx.open_body(request) if with_body else None
    async with held(ctx.locker, upload_id, stopper(reader)) as lock:
        info = await ctx.existing(upload_id, lock)
        if info.concat == "final":
            raise TusError(403, "final-upload", "a final upload of a concatenation is read-only")
        if info.finished:
            if with_body or not complete or offset != info.offset:
                raise bad_request(
                    "the upload is already complete and cannot be appended to",
                    "completed-upload",
                )
        else:
            if offset != info.offset:
                error = offset_mismatch(info.offset, offset)
                error.headers.update(draft.complete_field(False))
                raise error
            if length is not None and await declare(ctx, info, length):
                await ctx.state.update(info, lock)
            check_fits(info, content_length(request), inconsistent_length)
            await transfer(ctx, info, lock, reader, complete)
    status = 201 if draft.version <= 6 else 204
    headers = {"Upload-Offset": str(info.offset), **draft.complete_field(info.finished)}
    return response(status, headers)
