"""The record of a direct upload: an `UploadInfo` in the tus state backend.

Its `storage` is the S3 store's (key, multipart upload id) plus `direct` (the path it takes,
`s3-multipart`) and `owner` (the `owner` metadata a pre-create hook recorded, if any). Its length
stays unknown until CompleteMultipartUpload, when it becomes the sum of the parts. Because the
object key is the S3 store's `<prefix><id>`, the expiry sweep finds an abandoned direct upload
through ListMultipartUploads and removes it (aborting the multipart upload) like a tus one.

Every request about an upload names its id (in the path) and its key (in the query, as Uppy sends
it); both must match a record, so one upload's key or id cannot sign, complete or abort another.
"""

from __future__ import annotations

from typing import Any

from tusd_py.errors import TusError, bad_request, gone
from tusd_py.ids import is_valid_upload_id, new_upload_id
from tusd_py.info import UploadInfo
from tusd_py.metadata import encode_metadata, metadata_problem
from tusd_py.protocol.context import TusContext, is_direct_record, is_expired
from tusd_py.request_context import bind_upload

MULTIPART = "s3-multipart"
POST = "s3-post"


def no_record(upload_id: str) -> TusError:
    return TusError(404, "direct-upload-not-found", f"no direct upload {upload_id!r}")


def wrong_key() -> TusError:
    return TusError(403, "direct-key-mismatch", "the key does not belong to this upload")


def new_upload_info(ctx: TusContext, body: Any) -> tuple[UploadInfo, str]:
    """The upload `{filename, type, metadata}` asks for, and its content type; 400 for a body
    of any other shape. The metadata keeps what Uppy sends (name, type, ...) plus `filename`
    and `filetype`, as Uppy's Tus plugin sends them, so hooks see the same keys on both paths."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object {filename, type, metadata}")
    filename, content_type = body.get("filename", ""), body.get("type") or ""
    if not isinstance(filename, str) or not isinstance(content_type, str):
        raise bad_request("filename and type must be strings")
    metadata = clean_metadata(ctx, body.get("metadata") or {})
    if filename:
        metadata.setdefault("filename", filename)
    if content_type:
        metadata.setdefault("filetype", content_type)
    check_metadata_size(ctx, metadata)
    info = UploadInfo(
        id=new_upload_id(), length=None, metadata=metadata, expires_at=ctx.new_expiry()
    )
    return info, content_type or "application/octet-stream"


def clean_metadata(ctx: TusContext, raw: object) -> dict[str, str]:
    """Uppy's `file.meta`: strings, numbers and nulls (`relativePath: null`); nulls dropped."""
    if not isinstance(raw, dict):
        raise bad_request("metadata must be a JSON object")
    metadata: dict[str, str] = {}
    for key, value in raw.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else str(value)
        problem = metadata_problem(key, text)
        if problem is not None:
            raise bad_request(f"metadata: {problem}", "invalid-metadata")
        metadata[key] = text
    return metadata


def check_metadata_size(ctx: TusContext, metadata: dict[str, str]) -> None:
    size = len(encode_metadata(metadata))
    if size > ctx.config.max_metadata_size:
        raise bad_request(
            f"the metadata is {size} bytes encoded; the limit is {ctx.config.max_metadata_size}",
            "metadata-too-large",
        )


async def create_multipart_record(ctx: TusContext, info: UploadInfo) -> None:
    """pre-create (may refuse, or choose the id and so the key), the multipart upload, the
    record, post-create."""
    bind_upload(info.id)
    await ctx.hooks.pre_create(info)
    bind_upload(info.id)
    await ctx.store.create(info)  # CreateMultipartUpload and the `.info`
    info.storage["direct"] = MULTIPART
    info.storage["owner"] = info.metadata.get("owner")
    await ctx.state.create(info)
    await ctx.state.update(info, None)  # the `.info` says `direct` too (rebuilds keep it)
    ctx.hooks.created(info)


async def find_record(ctx: TusContext, upload_id: str, key: str | None) -> UploadInfo:
    """The record that `upload_id` and `key` both name: 404 for an unknown (or forged) id or a
    tus upload's, 403 for another upload's key, 410 once expired."""
    if not is_valid_upload_id(upload_id):
        raise no_record(upload_id)
    if key is None:
        raise bad_request("the key query parameter is required", "missing-key")
    info = await ctx.state.get(upload_id)
    if info is None or not is_direct_record(info):
        raise no_record(upload_id)
    bind_upload(info.id)
    if info.storage.get("key") != key:
        raise wrong_key()
    if is_expired(info):
        raise gone(upload_id)
    return info
