"""Small clients for end-to-end tests: tus requests over httpx, and HTTP/1.1 over a bare socket.

The socket client exists to do what well-behaved HTTP libraries refuse to: send a body shorter
than its Content-Length, send it slowly, or hang up in the middle.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

TUS = {"Tus-Resumable": "1.0.0"}


class SourceFile:
    """A file to upload, with the bytes and digest the download must match."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.size = len(self.data)
        self.sha256 = hashlib.sha256(self.data).hexdigest()


MakeFile = Callable[[int], SourceFile]


def head(url: str) -> httpx.Response:
    return httpx.head(url, headers=TUS, timeout=30)


def download_sha256(url: str) -> tuple[int, str]:
    """GET the upload and return (number of bytes, SHA-256 hex digest) of the body."""
    digest = hashlib.sha256()
    size = 0
    with httpx.stream("GET", url, headers=TUS, timeout=60) as response:
        assert response.status_code == 200, (
            f"GET {url} answered {response.status_code} {dict(response.headers)}: "
            f"{response.read()[:500]!r}"
        )
        for chunk in response.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def stable_offset(url: str, timeout: float = 10.0, settle: float = 0.5) -> int:
    """HEAD until the upload answers and its offset stays the same for `settle` seconds.

    Right after a client hangs up, the server may still be writing the bytes it received, or
    still hold the upload's lock (423); both are fine for a moment.
    """
    deadline = time.monotonic() + timeout
    last: int | None = None
    since = time.monotonic()
    answers: list[str] = []
    while time.monotonic() < deadline:
        response = head(url)
        answers.append(f"{response.status_code} {response.headers.get('Upload-Offset')}")
        if response.status_code in (200, 204) and "Upload-Offset" in response.headers:
            offset = int(response.headers["Upload-Offset"])
            if offset != last:
                last, since = offset, time.monotonic()
            elif time.monotonic() - since >= settle:
                return offset
        time.sleep(0.1)
    raise AssertionError(f"HEAD {url} gave no stable offset within {timeout}s: {answers[-10:]}")


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
