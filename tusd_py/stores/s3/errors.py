"""What failed S3 calls become: `TusError`s that say which call failed and what to do.

A failure the server's own configuration causes (a missing bucket, refused credentials, the
wrong region) says so and is a 500: presenting it as an outage that a retry may fix would send
clients into retries that cannot succeed and operators looking at S3's status page.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)

from tusd_py.errors import TusError, storage_unavailable

MISSING_KEY = frozenset({"NoSuchKey", "404", "NotFound"})
NO_UPLOAD = frozenset({"NoSuchUpload"})  # the multipart upload was completed or aborted
# Failures while streaming a response body (after botocore's request-level retries).
STREAM_ERRORS = (aiohttp.ClientError, BotoCoreError, asyncio.TimeoutError)

NO_BUCKET = frozenset({"NoSuchBucket"})
DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"})
BAD_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)
WRONG_REGION = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)
_VERIFY_FAILED = re.compile(r"certificate verify failed: ([^()\]']+)")
CREDENTIAL_SOURCES = (
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance or task role"
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def error_detail(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc) or type(exc).__name__


def misconfiguration(exc: BaseException, bucket: str, head_bucket: bool = False) -> str | None:
    """What is wrong with the configuration when `exc` comes from it, else None.

    `head_bucket`: HEAD answers carry no error body, so there a bare 404 means no bucket and
    a 301 the wrong region."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return f"no S3 credentials found (set {CREDENTIAL_SOURCES})"
    if isinstance(exc, SSLError):
        return tls_problem(exc)
    code = error_code(exc)
    if code in NO_BUCKET or (head_bucket and code in ("404", "NotFound")):
        return f"the S3 bucket {bucket!r} does not exist"
    if code in DENIED:
        return (
            f"access to the S3 bucket {bucket!r} is denied: check the credentials' permissions "
            "and the bucket policy"
        )
    if code in BAD_CREDENTIALS:
        return f"S3 refused the credentials ({code}): check {CREDENTIAL_SOURCES}"
    if code in WRONG_REGION or (head_bucket and code == "301"):
        return f"the S3 bucket {bucket!r} is in another region: set --s3-region to its region"
    return None


def tls_problem(exc: SSLError) -> str:
    """A TLS failure in an operator's words: most often a certificate signed by a CA this
    server was not told to trust (a private CA, a TLS-inspecting proxy)."""
    url = urlsplit(str(getattr(exc, "kwargs", {}).get("endpoint_url", "")))
    where = f"the S3 endpoint {url.scheme}://{url.netloc}" if url.netloc else "the S3 endpoint"
    found = _VERIFY_FAILED.search(str(exc))
    if found is None:
        return f"TLS with {where} failed ({exc})"
    return (
        f"TLS with {where} failed: its certificate could not be verified "
        f"({found[1].strip()}); set --s3-ca-bundle (or AWS_CA_BUNDLE) to the CA that signed it"
    )


def operation_name(operation: str) -> str:
    """S3's name of a call: `UploadPart` for aiobotocore's `upload_part`."""
    if "_" not in operation and not operation.islower():
        return operation
    return "".join(word.capitalize() for word in operation.split("_"))


def s3_unavailable(
    operation: str, upload_id: str | None, exc: BaseException, bucket: str | None = None
) -> TusError:
    subject = f" for upload {upload_id!r}" if upload_id else ""
    name = operation_name(operation)
    problem = misconfiguration(exc, bucket or "?")
    if problem is not None:
        return TusError(
            500,
            "storage-misconfigured",
            f"S3 {name}{subject} failed: {problem} ({error_detail(exc)}); the server's "
            "storage is misconfigured, which retrying will not fix: tell its operator",
            operation=f"S3 {name}",
        )
    return storage_unavailable(
        f"S3 {name}{subject} failed even after retries ({error_detail(exc)}); "
        "the upload is intact up to its current offset, resume it shortly",
        operation=f"S3 {name}",
    )


def bucket_problem(exc: BaseException, bucket: str, endpoint: str | None) -> TusError:
    """Why a HeadBucket of the start-up and /ready checks failed, in an operator's words."""
    problem = misconfiguration(exc, bucket, head_bucket=True)
    if problem is not None:
        return TusError(503, "storage-misconfigured", problem)
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        where = endpoint or "AWS"
        return storage_unavailable(f"the S3 endpoint {where} is unreachable: {error_detail(exc)}")
    return storage_unavailable(f"S3 HeadBucket of {bucket!r} failed: {error_detail(exc)}")


def inconsistent(upload_id: str, what: str) -> TusError:
    return TusError(500, "storage-inconsistent", f"upload {upload_id!r}: {what}")


def invalid_storage(what: str) -> TusError:
    """A pre-create hook chose where the upload goes, and its answer cannot be used: the
    application's fault, not the client's (hook answers are checked like any input)."""
    return TusError(
        500,
        "hook-invalid-storage",
        f"the pre-create hook's ChangeFileInfo.Storage names {what}",
        operation="pre-create hook",
    )
