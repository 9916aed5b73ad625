"""Streaming, interruptible reading of a request body straight from ASGI `receive`.

A PATCH body can be gigabytes, its client can vanish or go silent, and another request may need
the upload's lock. The reader therefore ends its stream — normally, so everything received so far
is stored and committed — when the client disconnects, when `stop()` is called (lock handover,
lost lease, server shutdown), when nothing arrives for `idle_timeout` seconds, or when the body
arrives slower than `min_rate` bytes per second, averaged over `idle_timeout` seconds of waiting
for it (a slowloris trickling a byte now and then never goes idle). Only time spent waiting in
`receive()` counts, so a server busy writing elsewhere (a slow S3) does not make its client look
slow. Bytes beyond `limit` are never yielded: they raise a 413 instead.

A request the HTTP layer refused as malformed (broken chunked framing: uvicorn answers 400 itself,
closes the connection and hands the app an `http.disconnect`, the same as a client that went
away) also raises instead of ending normally, so nothing more of it is committed. The app can
only tell the two apart because our uvicorn protocol class (tusd_py/connections.py) records the
refusal in the request's scope state (`refuse_framing`); other servers never record it.

Below the reader: what every handler that takes a body asks of the request's headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope

from tusd_py.errors import TusError
from tusd_py.protocol.headers import parse_uint

# The key in a request's ASGI scope["state"] that says the HTTP layer refused its framing.
FRAMING_REFUSED = "tusd.framing_refused"


def refuse_framing(state: MutableMapping[str, Any]) -> None:
    """Called by the HTTP layer, with the request's scope["state"], when it answered 400 for a
    malformed body (the dict is shared by every copy of the scope)."""
    state[FRAMING_REFUSED] = True


def framing_refused(scope: Scope) -> bool:
    return bool(scope.get("state", {}).get(FRAMING_REFUSED))


def _never() -> bool:
    return False


class BodyReader:
    def __init__(
        self,
        receive: Receive,
        limit: int | None,
        idle_timeout: float,
        min_rate: int = 0,
        refused: Callable[[], bool] = _never,
    ) -> None:
        """`refused()` says whether the HTTP layer refused the body as malformed; asked when the
        connection ends before the body does."""
        self._receive = receive
        self._refused = refused
        self.limit = limit
        self._idle_timeout = idle_timeout
        self._min_rate = min_rate
        self._window_wait = 0.0  # seconds spent in receive() since the rate window began
        self._window_bytes = 0
        self._task: asyncio.Task[object] | None = None
        self._waiting = False
        self._stopping = False
        self._last_activity = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self.received = 0
        self.complete = False  # the client sent its whole body
        self.stop_reason: str | None = None

    def stop(self, reason: str = "stopped") -> None:
        """End the stream as soon as possible, keeping what was received."""
        if self._stopping or self.complete:
            return
        self._stopping = True
        self.stop_reason = reason
        # Only a task parked in receive() is cancelled; one busy elsewhere sees the flag next turn.
        if self._waiting and self._task is not None:
            self._task.cancel()

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_activity
        if idle >= self._idle_timeout:
            self.stop("idle")
        else:
            self._watchdog = loop.call_later(self._idle_timeout - idle, self._check_idle)

    def _too_slow(self, waited: float, received: int) -> bool:
        if not self._min_rate or self._idle_timeout <= 0:
            return False
        self._window_wait += waited
        self._window_bytes += received
        if self._window_wait < self._idle_timeout:
            return False
        slow = self._window_bytes < self._min_rate * self._window_wait
        self._window_wait, self._window_bytes = 0.0, 0
        return slow

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._last_activity = loop.time()
        if self._idle_timeout > 0:
            self._watchdog = loop.call_later(self._idle_timeout, self._check_idle)
        try:
            while not self._stopping:
                self._waiting = True
                asked = loop.time()
                try:
                    message = await self._receive()
                except asyncio.CancelledError:
                    if not self._stopping and self._task is not None:
                        # Cancelled from outside (server shutdown): keep the bytes, end here.
                        self.stop_reason = "cancelled"
                    if self._task is not None:
                        self._task.uncancel()
                    return
                finally:
                    self._waiting = False
                if message["type"] == "http.disconnect":
                    if self._refused():
                        raise TusError(
                            400,
                            "malformed-body",
                            "the request body's chunked framing is invalid; none of this "
                            "request's bytes were stored",
                        )
                    self.stop_reason = "client went away"
                    return
                chunk: bytes = message.get("body", b"")
                more = bool(message.get("more_body", False))
                if more and self._too_slow(loop.time() - asked, len(chunk)):
                    self.stop("too slow")
                if chunk:
                    self._last_activity = loop.time()
                    self.received += len(chunk)
                    if self.limit is not None and self.received > self.limit:
                        raise TusError(
                            413,
                            "body-too-large",
                            f"the request body goes {self.received - self.limit} bytes or more "
                            "past the upload's length",
                        )
                    yield chunk
                if not more:
                    self.complete = True
                    return
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()


# How a body that ended early ended, in the words of the access line.
_ENDINGS = {
    "handover": "another request took the upload over",
    "idle": "the client sent nothing for --read-timeout",
    "too slow": "the body arrived slower than --body-min-rate",
    "shutdown": "the server is shutting down",
    "cancelled": "the request was cancelled",
}


def early_end(reader: BodyReader) -> str | None:
    """Why the body stopped before its end ("client went away", ...), None when it did not."""
    if reader.complete or reader.stop_reason is None:
        return None
    return _ENDINGS.get(reader.stop_reason, reader.stop_reason)


OFFSET_OCTET_STREAM = "application/offset+octet-stream"


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return None if value is None else parse_uint("Content-Length", value)


def has_body(request: Request) -> bool:
    length = content_length(request)
    return bool(length) or (
        length is None and "chunked" in request.headers.get("transfer-encoding", "")
    )


def opened_body(request: Request) -> BodyReader | None:
    """The reader `TusContext.open_body` gave the request (it is kept in `request.state`), or
    None. Read from the scope's state dict: `getattr(request.state, ...)` raises and catches an
    AttributeError for every request without a body."""
    reader: BodyReader | None = request.scope.get("state", {}).get("body_reader")
    return reader


def body_left_unread(request: Request) -> bool:
    """True when the client sent (or is sending) body bytes this request never read."""
    reader = opened_body(request)
    if reader is not None and reader.complete:
        return False
    try:
        return has_body(request)
    except TusError:  # a malformed Content-Length: nobody can tell where the body ends
        return True


def check_content_type(request: Request, expected: str = OFFSET_OCTET_STREAM) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != expected:
        raise TusError(
            415,
            "invalid-content-type",
            f"Content-Type must be {expected}, got {media_type or 'nothing'!r}",
        )
