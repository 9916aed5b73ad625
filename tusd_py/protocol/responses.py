"""The response shapes of the tus endpoint: every one carries `Tus-Resumable`."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from tusd_py.errors import TusError
from tusd_py.protocol.headers import TUS_VERSION


def tus_response(
    status: int, headers: Mapping[str, str] | None = None, body: bytes = b""
) -> Response:
    merged = {"Tus-Resumable": TUS_VERSION, **(headers or {})}
    return Response(body, status_code=status, headers=merged)


def error_response(error: TusError) -> Response:
    """One place turns an error into what the client sees: status, headers, a plain message."""
    return tus_response(
        error.status,
        {"Content-Type": "text/plain; charset=utf-8", **error.headers},
        (error.message + "\n").encode(),
    )
