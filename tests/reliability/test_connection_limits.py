"""The request-head limits of `tusd_py.connections` on both of uvicorn's HTTP implementations,
and its record of a body refused for bad framing (which the app sees as a disconnect).

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
from tusd_py.errors import TusError
from tusd_py.protocol.body import BodyReader, framing_refused

HEAD_TIMEOUT = 0.5
MAX_HEAD = 4096


async def echo(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(f"{len(body)}")


# How each body read by `read_body` ended, in order.
BODY_ENDINGS: list[str] = []


async def read_body(request: Request) -> PlainTextResponse:
    reader = BodyReader(request.receive, None, 5.0, refused=lambda: framing_refused(request.scope))
    received = 0
    try:
        async for chunk in reader.chunks():
            received += len(chunk)
    except TusError as exc:
        BODY_ENDINGS.append(f"{exc.status} after {received}")
        raise
    BODY_ENDINGS.append(f"{'complete' if reader.complete else 'ended'} after {received}")
    return PlainTextResponse(f"{received}")


@contextlib.contextmanager
def serving(base: type[asyncio.Protocol]) -> Iterator[int]:
    app = Starlette(
        routes=[
            Route("/", echo, methods=["GET", "POST"]),
            Route("/body", read_body, methods=["POST"]),
        ]
    )
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


@pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def test_a_body_refused_for_its_framing_is_told_apart_from_a_client_gone(
    base: type[asyncio.Protocol],
) -> None:
    head = b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    BODY_ENDINGS.clear()
    with serving(base) as port:
        for tail in (b"0\r\n\r\n", b"ZZ\r\n", None):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(head + b"3\r\nabc\r\n")
                time.sleep(0.2)  # the first chunk reaches the app on its own
                if tail is None:
                    continue  # the client goes away
                sock.sendall(tail)
                expected = 200 if tail.startswith(b"0") else 400  # the 400 is uvicorn's own
                assert read_answer(sock, 5).status == expected
        deadline = time.monotonic() + 5
        while len(BODY_ENDINGS) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert BODY_ENDINGS == ["complete after 3", "400 after 3", "ended after 3"]
