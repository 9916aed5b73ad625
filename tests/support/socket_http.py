"""HTTP/1.1 over a bare socket, for tests that need what well-behaved HTTP libraries refuse.

It can send a body shorter than its Content-Length, send it slowly, or hang up in the middle.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from tests.support.tus_requests import TUS


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class RawHTTP:
    """One HTTP/1.1 connection over a plain socket; the caller decides what goes on the wire."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None, url
        self.base = url
        self.path = parts.path or "/"
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.host_header = f"{parts.hostname}:{parts.port}"

    def send_head(self, method: str, headers: Mapping[str, str | int]) -> None:
        lines = [f"{method} {self.path} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self) -> RawResponse:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed before a response; got {buffer!r}")
            buffer += chunk
        head_block, body = buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head_block.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return RawResponse(int(status_line.split(" ")[1]), headers, body)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_create(endpoint: str, length: int) -> str:
    """POST a new upload of `length` bytes over a bare socket; return its absolute URL."""
    with RawHTTP(endpoint) as conn:
        conn.send_head(
            "POST",
            {**TUS, "Upload-Length": length, "Content-Length": 0, "Connection": "close"},
        )
        response = conn.read_response()
    assert response.status == 201, f"POST {endpoint}: {response}"
    return urljoin(endpoint, response.headers["location"])


def patch_headers(offset: int, length: int) -> dict[str, str | int]:
    return {
        **TUS,
        "Upload-Offset": offset,
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": length,
    }
