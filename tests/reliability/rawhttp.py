"""HTTP/1.1 over a bare socket, for requests no well-behaved client library would send."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Answer:
    status: int  # 0: the connection closed (or reset) without a response
    headers: dict[str, str]
    body: bytes
    closed: bool = False


def parse_response(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body)


def body_expected(answer: Answer, method: str) -> int:
    if method == "HEAD" or answer.status in (204, 304) or answer.status < 200:
        return 0
    return int(answer.headers.get("content-length", "0") or 0)


def read_answer(
    sock: socket.socket, timeout: float, data: bytes = b"", method: str = "GET"
) -> Answer:
    """Read until the response head and its body are in, the peer closes, or `timeout` passes;
    `data` is what was already read."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    closed = False
    while time.monotonic() < deadline:
        if b"\r\n\r\n" in data:
            answer = parse_response(data)
            if len(answer.body) >= body_expected(answer, method):
                return answer
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    if not data:
        return Answer(0, {}, b"", closed=closed)
    answer = parse_response(data)
    answer.closed = closed
    return answer


def request(
    port: int,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    timeout: float = 5.0,
) -> Answer:
    """One request on its own connection; Host and Content-Length are added when missing."""
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: 127.0.0.1:{port}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body and "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        return read_answer(sock, timeout, method=method)


def answered_or_closed(socks: list[socket.socket]) -> int:
    """How many of these connections the server answered or closed (EOF, reset, a 408); never
    blocks. On a connection that sent nothing, anything readable is the server letting go."""
    done = 0
    for start in range(0, len(socks), 512):  # select() takes descriptors below FD_SETSIZE only
        batch = socks[start : start + 512]
        poller = select.poll()
        for sock in batch:
            poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        done += len(poller.poll(0))
    return done


def trickle(sock: socket.socket, byte: bytes, every: float, limit: float) -> tuple[Answer, float]:
    """Send `byte` every `every` seconds until the server answers or closes (or `limit` seconds
    pass); returns the answer (status 0: closed without one) and how long it took."""
    started = time.monotonic()
    sock.settimeout(every)
    while time.monotonic() - started < limit:
        try:
            sock.sendall(byte)
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return Answer(0, {}, b"", closed=True), time.monotonic() - started
        if not data:
            return Answer(0, {}, b"", closed=True), time.monotonic() - started
        return read_answer(sock, 2.0, data), time.monotonic() - started
    return Answer(0, {}, b""), time.monotonic() - started
