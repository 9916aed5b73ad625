"""The request-head limits of `tusd_py.connections` on both of uvicorn's HTTP implementations.

They subclass uvicorn's protocol classes and read their state, so an upgrade of uvicorn that
changes those internals must fail here rather than silently drop the limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tests.reliability.rawhttp import read_answer, request, trickle
from tusd_py.connections import http_protocol

HEAD_TIMEOUT = 0.5
MAX_HEAD = 4096


async def echo(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(f"{len(body)}")


@contextlib.contextmanager
def serving(base: type[asyncio.Protocol]) -> Iterator[int]:
    app = Starlette(routes=[Route("/", echo, methods=["GET", "POST"])])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=http_protocol(HEAD_TIMEOUT, MAX_HEAD, base),
        log_level="error",
        h11_max_incomplete_event_size=MAX_HEAD * 4,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def test_head_limits(base: type[asyncio.Protocol]) -> None:
    with serving(base) as port:
        # Ordinary requests, kept alive, with bodies in the same packets as their heads.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for size in (0, 10, 200_000):
                body = b"b" * size
                sock.sendall(
                    f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode() + body
                )
                answer = read_answer(sock, 5)
                assert (answer.status, answer.body) == (200, str(size).encode())
            # A trickled second head on the kept-alive connection.
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            answer, held = trickle(sock, b"a", 0.05, 5)
            assert answer.status in (0, 408) and held < HEAD_TIMEOUT + 1.5, (answer, held)

        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            started = time.monotonic()
            assert sock.recv(10) == b""  # silent: closed
            assert time.monotonic() - started < HEAD_TIMEOUT + 1.5

        big = request(port, "GET", "/", [("X-Big", "a" * (MAX_HEAD + 1))])
        assert big.status == 431, big
        fits = request(port, "GET", "/", [("X-Fits", "a" * (MAX_HEAD - 100))])
        assert fits.status == 200, fits
