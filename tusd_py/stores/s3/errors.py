"""What failed S3 calls become: `TusError`s that say which call failed and what to do."""

from __future__ import annotations

import asyncio

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from tusd_py.errors import TusError, storage_unavailable

MISSING_KEY = frozenset({"NoSuchKey", "404", "NotFound"})
NO_UPLOAD = frozenset({"NoSuchUpload"})  # the multipart upload was completed or aborted
# Failures while streaming a response body (after botocore's request-level retries).
STREAM_ERRORS = (aiohttp.ClientError, BotoCoreError, asyncio.TimeoutError)


def error_detail(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc) or type(exc).__name__


def operation_name(operation: str) -> str:
    """S3's name of a call: `UploadPart` for aiobotocore's `upload_part`."""
    if "_" not in operation and not operation.islower():
        return operation
    return "".join(word.capitalize() for word in operation.split("_"))


def s3_unavailable(operation: str, upload_id: str | None, exc: BaseException) -> TusError:
    subject = f" for upload {upload_id!r}" if upload_id else ""
    name = operation_name(operation)
    return storage_unavailable(
        f"S3 {name}{subject} failed even after retries ({error_detail(exc)}); "
        "the upload is intact up to its current offset, resume it shortly",
        operation=f"S3 {name}",
    )


def inconsistent(upload_id: str, what: str) -> TusError:
    return TusError(500, "storage-inconsistent", f"upload {upload_id!r}: {what}")
