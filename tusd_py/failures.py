"""One error line for every request answered 5xx: what failed and why, for the operator.

The client gets a short message; the log gets the operation that failed (`S3 UploadPart`, `Redis
EVALSHA commit`, `write /data/<id>`), its cause (the exception the `TusError` was raised from) and,
through the log filter, the request and upload ids. The traceback follows at debug level only:
the one line is what an operator reads, the traceback what a developer asks for.
"""

from __future__ import annotations

import logging
import traceback

from tusd_py.errors import TusError

log = logging.getLogger("tusd_py.failures")


def cause_of(error: BaseException) -> str:
    """What the error came from, in one line: the original exception, else its own message."""
    cause = error.__cause__
    if isinstance(cause, TusError):
        return cause.message
    if cause is not None:
        text = str(cause)
        return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return error.message if isinstance(error, TusError) else describe_unexpected(error)


def describe_unexpected(exc: BaseException) -> str:
    """`ValueError: boom (at tusd_py/x.py:12 in f)`: enough to find the bug without a traceback."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        where = f" (at {_short_path(last.filename)}:{last.lineno} in {last.name})"
    text = str(exc)
    return f"{type(exc).__name__}{': ' + text if text else ''}{where}"


def _short_path(filename: str) -> str:
    marker = filename.rfind("tusd_py/")
    return filename[marker:] if marker >= 0 else filename


def log_server_error(error: TusError, method: str, path: str) -> None:
    """The one error line of a request answered `error` (status 5xx)."""
    cause = cause_of(error)
    what = f"{error.operation} failed: {cause}" if error.operation else cause
    log.error(
        "%s %s answered %d %s: %s",
        method,
        path,
        error.status,
        error.code,
        what,
        extra={
            "method": method,
            "path": path,
            "status": error.status,
            "code": error.code,
            "operation": error.operation,
            "cause": cause,
        },
    )
    if log.isEnabledFor(logging.DEBUG):
        log.debug("traceback of %s %s", method, path, exc_info=error)


def log_unexpected(exc: BaseException, method: str, path: str) -> None:
    """An exception that is no `TusError` (a bug): the same line, operation unknown."""
    cause = describe_unexpected(exc)
    log.error(
        "%s %s answered 500 internal-error: unexpected %s",
        method,
        path,
        cause,
        extra={
            "method": method,
            "path": path,
            "status": 500,
            "code": "internal-error",
            "cause": cause,
        },
    )
    if log.isEnabledFor(logging.DEBUG):
        log.debug("traceback of %s %s", method, path, exc_info=exc)
