"""CORS: the configured origins in the form browsers send them, and refusals an operator can see.

A browser's `Origin` is scheme, host and port only, the scheme and host in lower case and a
default port left out (`https://app.example`). An entry written any other way
(`https://App.example/`, `https://app.example:443`) would never match, and nothing would say
so; `normalise_origins` turns such entries into that form and refuses an entry that is no
origin at all (a path, a query, no host). `LoggedCORSMiddleware` is Starlette's CORS middleware
that logs what it refuses (a preflight, or a request from an origin not listed) at warning
level, once per origin per interval and at most `REFUSALS_PER_INTERVAL` lines per interval, so
a page hammering the server from a wrong origin cannot flood the log.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("tusd_py.cors")

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_DEFAULT_PORTS = {"http": 80, "https": 443}
REFUSALS_PER_INTERVAL = 20  # lines across all origins; more in one interval are counted only


def normalise_origin(entry: str) -> str:
    """`entry` as a browser sends it in `Origin`; ValueError when it is not an origin."""
    if entry == "*":
        return entry
    hint = (
        f"{entry!r} in --cors-origins is not an origin (scheme://host[:port], nothing after it, "
        "e.g. https://app.example or http://localhost:3000) (--cors-origins / TUSD_CORS_ORIGINS)"
    )
    try:
        parts = urlsplit(entry)
        port = parts.port
    except ValueError:
        raise ValueError(hint) from None
    scheme, host = parts.scheme.lower(), parts.hostname
    if (
        not _SCHEME.fullmatch(scheme)
        or not host
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "?" in entry
        or "#" in entry
        or parts.username is not None
    ):
        raise ValueError(hint)
    shown_host = f"[{host}]" if ":" in host else host  # hostname is lower case already
    if port is None or _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{shown_host}"
    return f"{scheme}://{shown_host}:{port}"


def normalise_origins(entries: Sequence[str]) -> list[str]:
    """Each entry normalised, duplicates dropped, the order kept."""
    return list(dict.fromkeys(normalise_origin(entry.strip()) for entry in entries))


class RefusalLog:
    """Decides which refusals get a line: each origin once per `interval` seconds, and at most
    REFUSALS_PER_INTERVAL lines in any interval (the origin is chosen by the client)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._window_start = float("-inf")
        self._lines = 0
        self._unlogged = 0

    def should_log(self, origin: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self._window_start >= self.interval:
            if self._unlogged:
                log.warning(
                    "%d more CORS refusals in the last %.0fs were not logged",
                    self._unlogged,
                    self.interval,
                )
            self._window_start, self._lines, self._unlogged = now, 0, 0
            # Forget what is older than the interval: the table stays as small as the traffic.
            self._last = {o: t for o, t in self._last.items() if now - t < self.interval}
        last = self._last.get(origin)
        if last is not None and now - last < self.interval:
            return False
        if self._lines >= REFUSALS_PER_INTERVAL:
            self._unlogged += 1
            return False
        self._last[origin] = now
        self._lines += 1
        return True


class LoggedCORSMiddleware(CORSMiddleware):
    def __init__(
        self, app: ASGIApp, /, *, refusal_log_interval: float = 60.0, **options: Any
    ) -> None:
        super().__init__(app, **options)
        self.refusals = RefusalLog(refusal_log_interval)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code >= 400:
            origin = request_headers["origin"]
            if self.refusals.should_log(origin):
                log.warning(
                    "refused a CORS preflight from origin %r (%s; method %s, headers %s); "
                    "allowed origins: %s",
                    origin,
                    bytes(response.body).decode(errors="replace"),
                    request_headers.get("access-control-request-method"),
                    request_headers.get("access-control-request-headers") or "none",
                    ", ".join(self.allow_origins) or "none",
                    extra={"origin": origin},
                )
        return response

    async def simple_response(
        self, scope: Scope, receive: Receive, send: Send, request_headers: Headers
    ) -> None:
        origin = request_headers.get("origin")
        if origin is None:
            # What CORSMiddleware.send does for a request without Origin (every tus client but
            # a browser's), without the Headers objects it builds per response.
            async def send_varied(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = list(message.get("headers", ()))  # as MutableHeaders
                    vary_on_origin(message["headers"])
                await send(message)

            await self.app(scope, receive, send_varied)
            return
        if (
            not self.is_allowed_origin(origin)
            and not _same_origin(origin, request_headers)
            and self.refusals.should_log(origin)
        ):
            log.warning(
                "a request from origin %r gets no CORS headers (not in --cors-origins: %s): "
                "its page cannot read the response",
                origin,
                ", ".join(self.allow_origins) or "none",
                extra={"origin": origin},
            )
        await super().simple_response(scope, receive, send, request_headers)


def vary_on_origin(raw: list[tuple[bytes, bytes]]) -> None:
    """Add `Origin` to the `Vary` of a response's raw headers, as CORSMiddleware.send does when
    the request has no Origin: one `Vary` header with every value it had, then `Origin`."""
    if any(name == b"vary" for name, _ in raw):
        headers = MutableHeaders(raw=raw)
        headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])
    else:
        raw.append((b"vary", b"Origin"))


def _same_origin(origin: str, request_headers: Headers) -> bool:
    """Browsers send `Origin` on a page's own POST and PATCH too (the demo page): no refusal."""
    return origin.partition("://")[2] == request_headers.get("host")
