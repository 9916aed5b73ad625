"""Errors are data: a code, an HTTP status and a message that says what was wrong.

Every failure the protocol layer can answer is a `TusError`; `protocol.responses` turns it into
the one response shape clients see. Third-party exceptions (botocore, redis, OSError) are mapped
into a `TusError` at the boundary where they happen, raised `from` the original (the cause) and
naming the `operation` that failed (`S3 UploadPart`, `Redis EVALSHA commit`, `write <path>`):
the two things the error log line of a 5xx (tusd_py/failures.py) tells the operator.
"""

from __future__ import annotations


class TusError(Exception):
    """A failure with the status and message the client should get."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        operation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.operation = operation  # what failed, for the log; never sent to the client

    def __repr__(self) -> str:
        return f"TusError({self.status}, {self.code!r}, {self.message!r})"


def bad_request(message: str, code: str = "bad-request") -> TusError:
    return TusError(400, code, message)


def not_found(upload_id: str) -> TusError:
    return TusError(404, "upload-not-found", f"upload {upload_id!r} does not exist")


def upload_exists(upload_id: str) -> TusError:
    """A creation (its id chosen by a pre-create hook) named an upload that exists."""
    return TusError(409, "upload-exists", f"upload {upload_id!r} already exists")


def gone(upload_id: str) -> TusError:
    return TusError(410, "upload-gone", f"upload {upload_id!r} has expired or was terminated")


def locked(upload_id: str) -> TusError:
    return TusError(
        423,
        "upload-locked",
        f"upload {upload_id!r} is in use by another request that did not let go in time; "
        "retry shortly",
    )


def offset_mismatch(expected: int, got: int) -> TusError:
    return TusError(
        409,
        "offset-mismatch",
        f"Upload-Offset is {got} but the upload is at offset {expected}",
        {"Upload-Offset": str(expected)},
    )


def storage_unavailable(
    what: str, retry_after: int = 5, *, operation: str | None = None
) -> TusError:
    """A backend (Redis, S3, disk) failed in a way a retry may fix: 503 + Retry-After."""
    return TusError(
        503, "storage-unavailable", what, {"Retry-After": str(retry_after)}, operation=operation
    )


def lock_lost(upload_id: str) -> TusError:
    return TusError(
        409,
        "lock-lost",
        f"upload {upload_id!r}: this request lost its lock (lease expired or taken over); "
        "nothing beyond the last committed offset was recorded",
    )
