"""What every request carries besides its body: an id, the upload it is about, hook changes.

`ObserveMiddleware` wraps the whole app. It honours the client's `X-Request-ID` (or makes one) and
echoes it, exposes the request's `RequestContext` (tusd_py/request_context.py) to logs and hooks,
applies response changes asked for by hooks, counts the request in the metrics and writes one
access-log line.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette._utils import get_route_path
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tusd_py import metrics
from tusd_py.cors import vary_on_origin
from tusd_py.failures import log_unexpected
from tusd_py.ids import is_valid_upload_id
from tusd_py.request_context import RequestContext, current_request

access_log = logging.getLogger("tusd_py.access")

_INTERNAL_ERROR = b"Internal Server Error\n"


def _internal_error_start() -> Message:
    return {
        "type": "http.response.start",
        "status": 500,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(_INTERNAL_ERROR)).encode()),
        ],
    }


# Anything printable up to 128 characters: long enough for UUIDs and trace ids, short and
# clean enough to log and echo safely.
_REQUEST_ID = re.compile(r"[!-~]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "PUT"})


class ObserveMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        base_path: str,
        quiet_paths: frozenset[str],
        vary_on_origin: bool = False,
    ) -> None:
        """`vary_on_origin`: add `Origin` to every response's `Vary`, as the CORS middleware
        does for a request without `Origin` (for an app that serves those past it)."""
        self.app = app
        self.base_path = base_path
        self.quiet_paths = quiet_paths  # probes and scrapes: not counted, logged at debug only
        self.vary_on_origin = vary_on_origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or secrets.token_hex(16)
        path = get_route_path(scope)
        ctx = RequestContext(request_id, scope, _upload_id_in_path(path, self.base_path))
        token = current_request.set(ctx)
        start = time.perf_counter()
        status = 500
        replacement_body: bytes | None = None
        body_sent = False
        response_started = False
        vary = self.vary_on_origin

        async def send_observed(message: Message) -> None:
            nonlocal status, replacement_body, body_sent, response_started
            if message["type"] == "http.response.start":
                response_started = True
                # A copy, as MutableHeaders would make: the list may be the response's own.
                raw = message["headers"] = list(message.get("headers", ()))
                if not any(name == b"x-request-id" for name, _ in raw):
                    raw.append((b"x-request-id", request_id.encode("latin-1")))
                if vary:
                    vary_on_origin(raw)
                changes = ctx.response_changes
                if changes is not None:
                    headers = MutableHeaders(raw=raw)
                    for name, value in changes.headers.items():
                        headers[name] = value
                    if changes.status_code:
                        message["status"] = changes.status_code
                    if changes.body:
                        replacement_body = changes.body.encode()
                        headers["Content-Length"] = str(len(replacement_body))
                status = message["status"]
            elif message["type"] == "http.response.body" and replacement_body is not None:
                if body_sent:
                    return
                body_sent = True
                message = {"type": "http.response.body", "body": replacement_body}
            await send(message)

        quiet = path in self.quiet_paths
        if not quiet:
            metrics.CONNECTIONS_OPEN.inc()
        try:
            await self.app(scope, receive, send_observed)
        except Exception as exc:
            # Outside the tus endpoint (which answers its own errors): answer the 500 here and
            # log it once, rather than Starlette's and uvicorn's tracebacks at error level.
            if response_started:
                raise
            log_unexpected(exc, scope.get("method", ""), scope.get("path", ""))
            await send_observed(_internal_error_start())
            await send_observed({"type": "http.response.body", "body": _INTERNAL_ERROR})
        finally:
            elapsed = time.perf_counter() - start
            method = _method_label(scope)
            if not quiet:
                metrics.CONNECTIONS_OPEN.dec()
                counted, timed = metrics.request_metrics(method, status)
                counted.inc()
                timed.observe(elapsed)
            level = logging.DEBUG if quiet else logging.INFO
            if access_log.isEnabledFor(level):  # the line is not even formatted otherwise
                _log_access(level, method, scope.get("path", ""), status, elapsed, ctx)
            current_request.reset(token)


def _log_access(
    level: int, method: str, path: str, status: int, elapsed: float, ctx: RequestContext
) -> None:
    line = "%s %s %d %.1fms"
    args: list[object] = [method, path, status, elapsed * 1000]
    if ctx.access_note is not None:
        line += ": %s"
        args.append(ctx.access_note)
    access_log.log(
        level,
        line,
        *args,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(elapsed * 1000, 1),
            **ctx.access_fields,
        },
    )


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            return text if _REQUEST_ID.fullmatch(text) else None
    return None


def _upload_id_in_path(path: str, base_path: str) -> str | None:
    if not path.startswith(base_path):
        return None
    rest = path[len(base_path) :]
    return rest if is_valid_upload_id(rest) else None


def _method_label(scope: Scope) -> str:
    method: str = scope.get("method", "")
    if method == "POST":
        for name, value in scope.get("headers", []):
            if name == b"x-http-method-override":
                method = value.decode("latin-1").strip().upper()
                break
    return method if method in _METHODS else "OTHER"
