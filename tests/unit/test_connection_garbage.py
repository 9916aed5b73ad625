"""The HTTP protocol class leaves no reference cycle per request: a finished request is freed by
its reference count, not by the garbage collector (which, with a cycle per request, spent ~3 µs
of a keep-alive HEAD's ~86 collecting them and promoted each request's objects to older
generations). The head-timeout clock is a deadline, not a timer per request."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from tusd_py.connections import http_protocol
from tusd_py.protocol.abort import abort_connection

REQUEST = b"HEAD /files/x HTTP/1.1\r\nHost: t\r\n\r\n"


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8080)}.get(name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def connection(head_timeout: float = 30.0) -> tuple[Any, Transport]:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    config.load()
    protocol_class = http_protocol(head_timeout, 64 * 1024)
    protocol: Any = protocol_class(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def answered(protocol: Any) -> Any:
    protocol.data_received(REQUEST)
    cycle = protocol.cycle
    for _ in range(100):
        if cycle.response_complete:
            return cycle
        await asyncio.sleep(0)
    raise AssertionError("the request was not answered")


async def test_a_finished_request_is_freed_without_the_garbage_collector(
    no_collector: None,
) -> None:
    protocol, transport = connection()
    first = weakref.ref(await answered(protocol))
    assert abort_connection(first().scope) is not None  # type: ignore[union-attr]
    await answered(protocol)  # the connection moves on to the next request
    for _ in range(3):
        await asyncio.sleep(0)  # the first request's task finishes
    assert first() is None, gc.get_referrers(first())
    assert len(transport.written) == 2
    protocol.connection_lost(None)


async def test_the_abort_of_a_request_closes_its_connection() -> None:
    protocol, transport = connection()
    cycle = await answered(protocol)
    abort = abort_connection(cycle.scope)
    assert abort is not None
    abort()
    assert transport.closed and cycle.disconnected


async def test_a_keep_alive_wait_has_no_head_clock() -> None:
    protocol, transport = connection(head_timeout=0.05)
    await answered(protocol)  # the first head's clock stops
    await asyncio.sleep(0.2)  # its timer fires and finds no head under way
    assert not transport.closed
    protocol.connection_lost(None)


async def test_a_head_begun_before_the_timer_fires_is_timed_from_its_own_first_byte() -> None:
    protocol, transport = connection(head_timeout=0.4)
    await answered(protocol)  # t=0: the clock stops; its timer stays armed for t=0.4
    await asyncio.sleep(0.2)
    protocol.data_received(b"HEAD /files/x HTTP/1.1\r\nHo")  # t=0.2: due by t=0.6, never done
    await asyncio.sleep(0.3)  # t=0.5: the timer fired at 0.4, found a later deadline, waits on
    assert not transport.closed
    await asyncio.sleep(0.5)
    assert transport.closed
    assert transport.written[-1].startswith(b"HTTP/1.1 408 ")
