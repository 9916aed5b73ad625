"""The routes `@uppy/aws-s3` calls with `companionEndpoint` (6.x; 5.x's `endpoint` the same):

    POST   /multipart                       {filename, type, metadata} -> {key, uploadId, bucket}
    GET    /multipart/{uploadId}/{part}?key= -> {url, expires}      a presigned UploadPart
    GET    /multipart/{uploadId}?key=        -> [{PartNumber, ETag, Size}]
    POST   /multipart/{uploadId}/complete?key= {parts: [{PartNumber, ETag}]} -> {location, key,
                                                bucket}
    DELETE /multipart/{uploadId}?key=        -> {}
    GET    /params?filename=&type=&metadata[k]=v -> {method: "POST", url, fields, expires}

Errors are JSON `{"error": code, "message": ...}` with a 4xx (5xx only for S3, Redis or a hook
failing, each logged once). Hooks run as for tus: pre-create before a multipart upload or a POST
form exists; pre-access ("write") before a part is signed, the upload completed or aborted,
("read") before its parts are listed; pre-terminate and post-terminate around an abort;
post-finish once CompleteMultipartUpload succeeded.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from tusd_py.direct_s3.bucket import DirectBucket
from tusd_py.direct_s3.records import (
    POST,
    check_metadata_size,
    clean_metadata,
    create_multipart_record,
    find_record,
    new_upload_info,
)
from tusd_py.errors import TusError, bad_request
from tusd_py.failures import log_server_error
from tusd_py.info import UploadInfo
from tusd_py.locking.held import held
from tusd_py.metrics import UPLOADS_BY_PATH
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.uploads import remove, too_large
from tusd_py.stores.s3.limits import MAX_OBJECT_SIZE, MAX_PARTS, MIN_PART_SIZE
from tusd_py.stores.s3.upload import S3Upload, object_key

log = logging.getLogger("tusd_py.direct_s3")

Handler = Callable[[Request], Awaitable[Response]]
# A presigned POST carries a whole object in one request: S3 takes at most 5 GiB that way.
MAX_POST_SIZE = 5 * 1024**3


def strip_etag(etag: object) -> str:
    """S3 quotes ETags; browsers hand them over quoted or not."""
    return str(etag).strip().strip('"')


def json_error(error: TusError) -> JSONResponse:
    return JSONResponse(
        {"error": error.code, "message": error.message},
        status_code=error.status,
        headers=error.headers,
    )


class DirectRoutes:
    def __init__(self, ctx: TusContext, bucket: DirectBucket) -> None:
        self.ctx = ctx
        self.bucket = bucket

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/multipart", self._guard(self.create), methods=["POST"]),
            Route("/multipart/{upload_id}", self._guard(self.list_parts), methods=["GET"]),
            Route("/multipart/{upload_id}", self._guard(self.abort), methods=["DELETE"]),
            Route("/multipart/{upload_id}/complete", self._guard(self.complete), methods=["POST"]),
            Route("/multipart/{upload_id}/{part_number}", self._guard(self.sign), methods=["GET"]),
            Route("/params", self._guard(self.post_params), methods=["GET"]),
        ]

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except TusError as error:
                if error.status >= 500:
                    log_server_error(error, request.method, request.url.path)
                return json_error(error)

        return guarded

    # -- multipart --------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise bad_request("the body must be JSON {filename, type, metadata}") from None
        info, _ = new_upload_info(self.ctx, body)
        await create_multipart_record(self.ctx, info)
        return JSONResponse(
            {"key": info.storage["key"], "uploadId": info.id, "bucket": self.bucket.name}
        )

    async def _record(self, request: Request, mode: str) -> UploadInfo:
        info = await find_record(
            self.ctx, request.path_params["upload_id"], request.query_params.get("key")
        )
        await self.ctx.hooks.pre_access(info, "write" if mode == "write" else "read")
        return info

    async def sign(self, request: Request) -> Response:
        number = part_number(request.path_params["part_number"])
        info = await self._record(request, "write")
        if info.completed:
            raise TusError(409, "direct-upload-completed", "this upload is complete already")
        await self._extend_expiry(info)
        url = await self.bucket.part_url(
            str(info.storage["key"]), str(info.storage["multipart_upload_id"]), number
        )
        return JSONResponse({"url": url, "expires": self.bucket.expiry})

    async def _extend_expiry(self, info: UploadInfo) -> None:
        """An upload still signing parts is alive: like a PATCH does for tus, push its expiry
        out, once it is half used (one write now and then, not one per part)."""
        expiration = self.ctx.config.expiration
        if info.expires_at is None or expiration <= 0:
            return
        if info.expires_at - time.time() < expiration / 2:
            info.expires_at = self.ctx.new_expiry()
            await self.ctx.state.update(info, None)

    async def list_parts(self, request: Request) -> Response:
        info = await self._record(request, "read")
        parts = await self._stored_parts(info)
        return JSONResponse(
            [
                {"PartNumber": int(p["PartNumber"]), "ETag": p["ETag"], "Size": int(p["Size"])}
                for p in parts
            ]
        )

    async def _stored_parts(self, info: UploadInfo) -> list[dict[str, Any]]:
        if info.completed:
            return []
        parts = await self.bucket.store.client.list_parts(S3Upload.from_info(info))
        return parts or []

    async def complete(self, request: Request) -> Response:
        upload_id = request.path_params["upload_id"]
        wanted = requested_parts(await request.body())
        info = await self._record(request, "write")
        key = str(info.storage["key"])
        async with held(self.ctx.locker, upload_id) as lock:
            info = await find_record(self.ctx, upload_id, key)  # as it is under the lock
            if not info.completed:
                upload = S3Upload.from_info(info)
                client = self.bucket.store.client
                stored = await client.list_parts(upload)
                if stored is not None:
                    total = sum(int(p["Size"]) for p in matched_parts(wanted, stored))
                    await self._check_size(info, total)
                    await client.complete(upload, matched_parts(wanted, stored))
                else:
                    # Completed before, and the record not told (a crash in between): the
                    # object is the truth.
                    size = await client.object_size(upload.key, upload.id)
                    if size is None:
                        raise TusError(
                            410, "upload-gone", "the multipart upload no longer exists in S3"
                        )
                    total = size
                info.length = total
                await self.ctx.state.commit(info, total, lock)
                info.completed = True
                await self.ctx.state.update(info, lock)
                await self.ctx.hooks.finished(info)
        return JSONResponse(
            {
                "location": await self.bucket.object_url(key),
                "key": key,
                "bucket": self.bucket.name,
            }
        )

    async def _check_size(self, info: UploadInfo, total: int) -> None:
        limit = self.ctx.config.max_size
        if limit and total > limit:
            # Nothing can make this upload acceptable: its parts go now, not at expiry.
            await remove(self.ctx, info)
            self.ctx.hooks.terminated(info)
            raise too_large(
                f"the parts add up to {total} bytes, more than Tus-Max-Size {limit}; "
                "the upload was aborted"
            )

    async def abort(self, request: Request) -> Response:
        upload_id = request.path_params["upload_id"]
        info = await self._record(request, "write")
        async with held(self.ctx.locker, upload_id):
            info = await find_record(self.ctx, upload_id, str(info.storage["key"]))
            if info.completed:
                raise TusError(
                    409, "direct-upload-completed", "a completed upload cannot be aborted"
                )
            await self.ctx.hooks.pre_terminate(info)
            await remove(self.ctx, info)
        self.ctx.hooks.terminated(info)
        return JSONResponse({})

    # -- one presigned POST -------------------------------------------------------------------

    async def post_params(self, request: Request) -> Response:
        query = request.query_params
        content_type = query.get("type") or "application/octet-stream"
        raw = {k[len("metadata[") : -1]: v for k, v in query.items() if _metadata_param(k)}
        metadata = clean_metadata(self.ctx, raw)
        filename = query.get("filename") or ""
        if filename:
            metadata.setdefault("filename", filename)
        metadata.setdefault("filetype", content_type)
        check_metadata_size(self.ctx, metadata)
        info, _ = new_upload_info(self.ctx, {"metadata": metadata, "type": content_type})
        await self.ctx.hooks.pre_create(info)  # may refuse, or choose the id (the key)
        key = object_key(self.bucket.store.prefix, info.id)
        limit = min(self.ctx.config.max_size or MAX_POST_SIZE, MAX_POST_SIZE)
        form = await self.bucket.post_form(key, content_type, limit)
        UPLOADS_BY_PATH.labels(POST, "created").inc()
        return JSONResponse(
            {
                "method": "POST",
                "url": await self.bucket.bucket_url(),
                "fields": form["fields"],
                "expires": self.bucket.expiry,
            }
        )


def _metadata_param(name: str) -> bool:
    return name.startswith("metadata[") and name.endswith("]") and len(name) > len("metadata[]")


def part_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_PARTS:
        raise bad_request(
            f"part number {text!r} is not an integer from 1 to {MAX_PARTS}", "invalid-part-number"
        )
    return int(text)


def requested_parts(body: bytes) -> list[tuple[int, str]]:
    """`{parts: [{PartNumber, ETag}]}` as (number, unquoted ETag), in order; 400 otherwise."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    parts = data.get("parts") if isinstance(data, dict) else None
    if not isinstance(parts, list) or not parts:
        raise bad_request("the body must be JSON {parts: [{PartNumber, ETag}, ...]}, not empty")
    result: dict[int, str] = {}
    for part in parts:
        number = part.get("PartNumber") if isinstance(part, dict) else None
        etag = part.get("ETag") if isinstance(part, dict) else None
        if isinstance(number, str) and number.isdigit():
            number = int(number)
        if not isinstance(number, int) or isinstance(number, bool) or not isinstance(etag, str):
            raise bad_request(f"each part needs a PartNumber and an ETag, got {part!r}")
        if not 1 <= number <= MAX_PARTS:
            raise bad_request(
                f"part number {number} is not from 1 to {MAX_PARTS}", "invalid-part-number"
            )
        if number in result:
            raise bad_request(f"part {number} is listed twice")
        result[number] = strip_etag(etag)
    return sorted(result.items())


def matched_parts(
    wanted: list[tuple[int, str]], stored: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The stored parts `wanted` names, checked against ListParts: each uploaded with that ETag,
    and every one but the last at least S3's 5 MiB (refused here, with the part named, rather
    than by S3 with EntityTooSmall)."""
    by_number = {int(p["PartNumber"]): p for p in stored}
    parts: list[dict[str, Any]] = []
    for index, (number, etag) in enumerate(wanted):
        part = by_number.get(number)
        if part is None:
            raise bad_request(f"part {number} was not uploaded", "part-not-uploaded")
        if strip_etag(part["ETag"]) != etag:
            raise bad_request(f"part {number} has another ETag in S3", "part-etag-mismatch")
        if index < len(wanted) - 1 and int(part["Size"]) < MIN_PART_SIZE:
            raise bad_request(
                f"part {number} has {part['Size']} bytes; every part but the last needs at "
                f"least {MIN_PART_SIZE}",
                "part-too-small",
            )
        parts.append(part)
    if sum(int(p["Size"]) for p in parts) > MAX_OBJECT_SIZE:
        raise too_large("the parts add up to more than S3's 5 TiB object limit")
    return parts


def direct_s3_routes(ctx: TusContext) -> list[BaseRoute]:
    """The mount of the direct routes at `config.direct_s3_path`, or nothing when off."""
    config = ctx.config
    if not config.s3_direct:
        return []
    store = ctx.store
    if not all(hasattr(store, name) for name in ("bucket", "prefix", "client")):
        raise ValueError(
            f"--s3-direct needs the S3 store; this server runs the {store.storage_type} store"
        )
    bucket = DirectBucket(store, config.s3_direct_presign_expiry)  # type: ignore[arg-type]
    return [Mount(config.direct_s3_path, routes=DirectRoutes(ctx, bucket).routes())]
