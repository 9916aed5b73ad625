"""Limits on request heads, enforced below ASGI: how long and how large a head may be.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`), but it waits forever for a
request head that never completes: a slowloris trickling header bytes, or thousands of
connections that send nothing, each hold a socket for as long as the client likes. Its httptools
parser also accepts request heads of any size. Both happen before the ASGI app sees a request, so
the limits live in a subclass of uvicorn's HTTP protocol class:

- a connection must complete each request head within `head_timeout` seconds of its first byte
  (for the first request: of the connection opening); otherwise it is answered 408 (or, if it
  sent nothing, just closed);
- a request head larger than `max_head_size` bytes is answered 431 and the connection closed.

What happens once a head is complete (bodies, idle keep-alive) is the app's and uvicorn's
business: `--read-timeout` and `--body-min-rate` for bodies, `--keep-alive-timeout` between
requests. With one exception: when the parser finds a request's body malformed (broken chunked
framing), uvicorn answers 400 and closes the connection itself, and the app sees only an
`http.disconnect` — what it sees for a client that went away, whose bytes it must keep. The
protocol class records the refusal in the request's scope state first
(`protocol.body.refuse_framing`), so the app commits nothing more of a refused body. And it
offers each request a way to end its connection without a traceback (`protocol.abort`), for a
download whose storage fails after its body started.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

from tusd_py.protocol.abort import offer_abort
from tusd_py.protocol.body import refuse_framing

_base: type[asyncio.Protocol]
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    _base = HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn without httptools
    _base = H11Protocol


def _response(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: "
        + str(len(message)).encode()
        + b"\r\n\r\n"
        + message
    )


class _HeadLimits(asyncio.Protocol):
    """Mixed in before a uvicorn HTTP protocol class (which provides `transport` and `cycle`).

    The deadline of the head being received is a number, not a timer of its own: arming and
    cancelling a timer for every request cost several µs of a keep-alive connection's HEAD. One
    timer per connection fires at the earliest deadline and, when the head it was armed for is
    done and another has started since, waits on for that one's."""

    head_timeout: float = 30.0
    max_head_size: int = 64 * 1024

    _head_bytes = 0  # of the head being received, before the current read
    _head_tail = b""  # its last bytes, in case the blank line spans two reads
    _head_deadline: float | None = None  # loop time by which the head must be complete
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._start_head_clock()

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_head():
            if self._head_deadline is None:
                self._start_head_clock()
            # Measured up to the blank line that ends the head: body bytes often arrive in the
            # same read, and do not count.
            window = self._head_tail + data
            end = window.find(b"\r\n\r\n")
            if end < 0:
                size = self._head_bytes + len(data)
                self._head_bytes, self._head_tail = size, window[-3:]
            else:
                size = self._head_bytes + end + 4 - len(self._head_tail)
            if size > self.max_head_size:
                self._refuse(
                    b"431 Request Header Fields Too Large",
                    f"the request head is larger than {self.max_head_size} bytes\n".encode(),
                )
                return
        super().data_received(data)
        if self._head_deadline is not None and not self._waiting_for_head():
            self._head_done()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_done()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        """No request is in progress: the next bytes belong to a request head."""
        cycle = getattr(self, "cycle", None)
        return cycle is None or bool(cycle.response_complete)

    def _start_head_clock(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_deadline = deadline = loop.time() + self.head_timeout
        if self._head_timer is None:
            self._head_timer = loop.call_at(deadline, self._head_clock_fired)

    def _head_done(self) -> None:
        self._head_bytes = 0
        self._head_tail = b""
        self._head_deadline = None  # the timer, if pending, finds nothing to do

    def _head_clock_fired(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None:
            return  # the next head's first byte arms the clock again
        loop = asyncio.get_running_loop()
        if loop.time() < deadline:  # a later head than the one the timer was armed for
            self._head_timer = loop.call_at(deadline, self._head_clock_fired)
            return
        if not self._waiting_for_head():
            self._head_done()
            return
        if self._head_bytes:
            self._refuse(
                b"408 Request Timeout",
                f"the request head did not arrive within {self.head_timeout:g} s\n".encode(),
            )
        else:
            self._close()

    def _refuse(self, status: bytes, message: bytes) -> None:
        transport = cast(asyncio.Transport, getattr(self, "transport", None))
        if transport is not None and not transport.is_closing():
            transport.write(_response(status, message))
        self._close()

    def _close(self) -> None:
        self._head_done()
        transport = cast(asyncio.Transport, getattr(self, "transport", None))
        if transport is not None and not transport.is_closing():
            transport.close()


class _Aborts(asyncio.Protocol):
    """Mixed in before a uvicorn HTTP protocol class: offers each request a way to close its
    connection as if the client had gone away (tusd_py/protocol/abort.py). The request's task
    starts only after this callback returns, so the offer is in place before the app runs."""

    _offered_to: Any = None  # the request cycle that has the offer

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = getattr(self, "cycle", None)
        if cycle is not None and cycle is not self._offered_to:  # once per request, not chunk
            self._offered_to = cycle
            offer_abort(cycle.scope.setdefault("state", {}), _CycleAbort(self, cycle))


class _CycleAbort:
    """Closes one request's connection. It holds the protocol and the request weakly: the
    request's scope holds it, and a reference back would make every request a reference cycle,
    left for the garbage collector (measured: ~13 objects a request, and ~3 µs of a keep-alive
    HEAD's ~86 in collections alone)."""

    __slots__ = ("_cycle", "_protocol")

    def __init__(self, protocol: asyncio.Protocol, cycle: Any) -> None:
        self._protocol = weakref.ref(protocol)
        self._cycle = weakref.ref(cycle)

    def __call__(self) -> None:
        protocol, cycle = self._protocol(), self._cycle()
        if protocol is None or cycle is None:
            return  # the connection is gone already
        cycle.disconnected = True  # uvicorn then sends nothing more and logs nothing
        transport = cast(asyncio.Transport, getattr(protocol, "transport", None))
        if transport is not None and not transport.is_closing():
            transport.close()


class _FramingRefusals(asyncio.Protocol):
    """Mixed in before a uvicorn HTTP protocol class: marks the request whose body uvicorn
    refuses (its `send_400_response`, called by both parsers on a parse error)."""

    def send_400_response(self, msg: str) -> None:
        cycle = getattr(self, "cycle", None)
        # Only a request whose body is still arriving: a parse error after a complete body is
        # the next, pipelined request's, which never reached the app.
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            refuse_framing(cycle.scope.setdefault("state", {}))
        super().send_400_response(msg)  # type: ignore[misc]


def http_protocol(
    head_timeout: float, max_head_size: int, base: type[asyncio.Protocol] | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (`base`; by default httptools when installed, else h11) with
    head limits; pass it as `uvicorn.Config(http=...)`."""
    if head_timeout <= 0 or max_head_size <= 0:
        raise ValueError("head_timeout and max_head_size must be > 0")
    base = base or _base
    namespace = {"head_timeout": head_timeout, "max_head_size": max_head_size}
    return cast(
        type[asyncio.Protocol],
        type(f"Limited{base.__name__}", (_HeadLimits, _Aborts, _FramingRefusals, base), namespace),
    )
