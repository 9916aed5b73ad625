"""A small HTTP/1.1 proxy that injects faults between a client and a real server (moto's S3).

Each request is read whole (answering `Expect: 100-continue` itself), then `decide(request)` picks
what happens to it:

    None            forwarded; the response is streamed back
    "500"           answered with a 500 InternalError S3 error document, not forwarded
    "503"           answered with a 503 SlowDown S3 error document, not forwarded
    "reset"         the client connection is reset (RST) before anything is forwarded
    "reset-after"   forwarded and executed upstream, then the client connection is reset before
                    the response: the client cannot know the request succeeded
    "stall"         held for `stall_seconds`, then forwarded (a slow or congested S3); not in
                    FAULTS, ask for it by name
    "cut"           forwarded, but the response's body is cut off after `cut_bytes` bytes and
                    the connection closed (a GetObject body that ends early); not in FAULTS

Every connection carries one request (`Connection: close` both ways), which keeps the proxy
simple and makes resets affect exactly one request. It runs in the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

FAULTS = ("500", "503", "reset", "reset-after")
STALL = "stall"
CUT = "cut"

_ERROR_DOCS = {
    "500": (500, "Internal Server Error", "InternalError"),
    "503": (503, "Slow Down", "SlowDown"),
}


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def is_upload_part(self) -> bool:
        return self.method == "PUT" and "partNumber=" in self.target

    @property
    def part_number(self) -> int | None:
        """The part an UploadPart request carries (parts may arrive in any order)."""
        if not self.is_upload_part:
            return None
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.target).query)
        return int(query["partNumber"][0])


Decide = Callable[[Request], str | None]


def random_faults(rate: float, kinds: Sequence[str] = FAULTS, seed: int = 0) -> Decide:
    """Fail a fraction `rate` of all requests with one of `kinds`, reproducibly."""
    rng = random.Random(seed)

    def decide(request: Request) -> str | None:
        return rng.choice(kinds) if rng.random() < rate else None

    return decide


def every_nth(n: int, kinds: Sequence[str] = FAULTS) -> Decide:
    """Fail every n-th request, cycling through `kinds`: each kind is exercised, retries succeed."""
    seen = 0

    def decide(request: Request) -> str | None:
        nonlocal seen
        seen += 1
        return kinds[(seen // n - 1) % len(kinds)] if seen % n == 0 else None

    return decide


def no_faults(request: Request) -> str | None:
    return None


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    decide: Decide = no_faults
    stall_seconds: float = 3.0
    cut_bytes: int = 0  # of a response body, for "cut"
    requests: Counter[str] = field(default_factory=Counter)  # forwarded or not, by method
    faults: Counter[str] = field(default_factory=Counter)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Python 3.11's wait_closed() does not wait for connection handlers: end them here.
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            request = await self._read_request(reader, writer)
            if request is None:
                return
            self.requests[request.method] += 1
            fault = self.decide(request)
            if fault is not None:
                self.faults[fault] += 1
            if fault in _ERROR_DOCS:
                await self._answer_error(writer, fault)
            elif fault == "reset":
                _reset(writer)
            elif fault == "reset-after":
                await self._forward(request, None)
                _reset(writer)
            elif fault == STALL:
                await asyncio.sleep(self.stall_seconds)
                await self._forward(request, writer)
            elif fault == CUT:
                await self._forward(request, writer, body_limit=self.cut_bytes)
            else:
                await self._forward(request, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [
            (k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:] if line)
        ]
        request = Request(method, target, headers)
        if (request.header("expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if request.header("transfer-encoding"):
            raise NotImplementedError("the fault proxy handles Content-Length bodies only")
        request.body = await reader.readexactly(int(request.header("content-length") or 0))
        return request

    async def _answer_error(self, writer: asyncio.StreamWriter, fault: str) -> None:
        status, reason, code = _ERROR_DOCS[fault]
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>injected by the fault proxy</Message></Error>"
        ).encode()
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def _forward(
        self, request: Request, client: asyncio.StreamWriter | None, body_limit: int | None = None
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            self.upstream_host, self.upstream_port, limit=1 << 20
        )
        try:
            skip = {"expect", "connection", "keep-alive"}
            head = [f"{request.method} {request.target} HTTP/1.1"]
            head += [f"{k}: {v}" for k, v in request.headers if k.lower() not in skip]
            head.append("Connection: close")
            up_writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + request.body)
            await up_writer.drain()
            response_head = await up_reader.readuntil(b"\r\n\r\n")
            if client is None:  # reset-after: let the upstream finish, tell the client nothing
                await up_reader.read()
                return
            client.write(_close_connection(response_head))
            left = body_limit  # None: all of it
            while left != 0 and (chunk := await up_reader.read(min(left or 1 << 16, 1 << 16))):
                client.write(chunk)
                await client.drain()
                if left is not None:
                    left -= len(chunk)
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()


def _close_connection(head: bytes) -> bytes:
    lines = head.decode("latin-1").split("\r\n")
    kept = [line for line in lines if line and not line.lower().startswith("connection:")]
    return ("\r\n".join([*kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1")


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # Linger 0: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
