"""A tus client that keeps going through crashes and faults, and keeps the books.

It does what a good tus client does: create, then HEAD + PATCH from the server's offset until the
upload is complete, on whichever server instance answers, retrying connection errors, 409, 423
and 5xx. On the way it records everything the suite's figures need: bytes sent, the highest
offset the servers ever reported, every offset that went backwards or past the bytes this
client had sent, and whether the finished upload downloads with the right SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"
SEND_PIECE = 256 * 1024

# One PATCH per upload of whatever remains (tus-js-client's default), or fixed-size chunks.
WHOLE = None


@dataclass
class Outcome:
    name: str
    size: int
    sha256: str
    upload_id: str | None = None
    created: int = 0  # uploads created for this file (a lost 201 costs an orphan and a new one)
    requests: int = 0
    sent: int = 0  # body bytes handed to connections
    acked: int = 0  # highest offset a server reported
    sent_upto: int = 0  # highest position this client ever sent up to
    resent_beyond_protocol: int = 0  # bytes re-sent below an offset a server had reported
    regressions: list[str] = field(default_factory=list)  # offsets that went backwards
    overshoots: list[str] = field(default_factory=list)  # offsets past the bytes sent
    lost: list[str] = field(default_factory=list)  # an upload that vanished (404/410)
    errors: Counter[str] = field(default_factory=Counter)
    completed: bool = False
    verified: bool = False
    detail: str = ""
    offsets: list[int] = field(default_factory=list)  # every offset reported, in order

    @property
    def violations(self) -> list[str]:
        return self.regressions + self.overshoots + self.lost


class Unexpected(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class ResilientUpload:
    def __init__(
        self,
        name: str,
        data: bytes,
        endpoints: Callable[[], Sequence[str]],
        http: httpx.AsyncClient,
        rng: random.Random,
        *,
        chunk: int | None = WHOLE,
        creation_with_upload: bool = False,
        deadline: float,
        max_requests: int = 400,
        rate: float | None = None,
        on_offset: Callable[[str, int], None] | None = None,
    ) -> None:
        self.data = data
        self.endpoints = endpoints
        self.http = http
        self.rng = rng
        self.chunk = chunk
        self.creation_with_upload = creation_with_upload
        self.deadline = deadline
        self.max_requests = max_requests
        self.rate = rate  # bytes per second a body is sent at (None: as fast as possible)
        self.on_offset = on_offset
        self.outcome = Outcome(name, len(data), hashlib.sha256(data).hexdigest())
        self._failures_in_a_row = 0

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> Outcome:
        out = self.outcome
        offset: int | None = None
        while not out.completed:
            if time.monotonic() > self.deadline or out.requests >= self.max_requests:
                out.detail = f"gave up after {out.requests} requests: {dict(out.errors)}"
                return out
            try:
                if out.upload_id is None:
                    offset = await self._create()
                elif offset is None:
                    offset = await self._head()
                elif offset >= out.size:
                    out.completed = True
                else:
                    offset = await self._patch(offset)
                self._failures_in_a_row = 0
            except (httpx.TransportError, Unexpected) as exc:
                what = exc.what if isinstance(exc, Unexpected) else type(exc).__name__
                out.errors[what] += 1
                offset = None  # resync with HEAD
                self._failures_in_a_row += 1
                await self._backoff(what)
        await self._verify()
        return out

    async def _backoff(self, what: str) -> None:
        if what in ("ConnectError",) and self._failures_in_a_row < 3:
            return  # that instance is down: the next request picks one at random again
        delay = min(0.05 * 2 ** min(self._failures_in_a_row, 5), 1.0)
        await asyncio.sleep(delay * (0.5 + self.rng.random()))

    def _url(self) -> str:
        assert self.outcome.upload_id is not None
        return self.rng.choice(list(self.endpoints())) + self.outcome.upload_id

    # -- requests ---------------------------------------------------------------------------

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.outcome.requests += 1
        return await self.http.request(method, url, **kwargs)

    def _saw_offset(self, offset: int) -> int:
        """Check an offset a server reported against everything seen before."""
        out = self.outcome
        out.offsets.append(offset)
        if offset > out.sent_upto or offset > out.size:
            out.overshoots.append(
                f"offset {offset} reported, but only {out.sent_upto} of {out.size} bytes were sent"
            )
        if offset < out.acked:
            out.regressions.append(f"offset {offset} reported after {out.acked}")
        out.acked = max(out.acked, offset)
        if self.on_offset is not None and out.upload_id is not None:
            self.on_offset(out.upload_id, offset)
        return offset

    async def _create(self) -> int | None:
        out = self.outcome
        endpoint = self.rng.choice(list(self.endpoints()))
        headers = {**TUS, "Upload-Length": str(out.size)}
        body: bytes | AsyncIterator[bytes] = b""
        first = 0
        if self.creation_with_upload and out.size:
            first = min(out.size, self.chunk or out.size)
            headers["Content-Type"] = OCTETS
            headers["Content-Length"] = str(first)
            body = self._body(0, first)
        out.acked = out.sent_upto = 0
        response = await self._request("POST", endpoint, headers=headers, content=body)
        if response.status_code != 201:
            raise Unexpected(f"POST {response.status_code}")
        out.created += 1
        out.upload_id = response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
        if "Upload-Offset" in response.headers:
            return self._saw_offset(int(response.headers["Upload-Offset"]))
        return None if first else 0

    async def _head(self) -> int:
        response = await self._request("HEAD", self._url(), headers=TUS)
        if response.status_code in (404, 410):
            self._lost(f"HEAD {response.status_code}")
        if response.status_code != 200:
            raise Unexpected(f"HEAD {response.status_code}")
        return self._saw_offset(int(response.headers["Upload-Offset"]))

    async def _patch(self, offset: int) -> int:
        out = self.outcome
        if offset < out.acked:
            out.resent_beyond_protocol += out.acked - offset
        end = out.size if self.chunk is None else min(out.size, offset + self.chunk)
        headers = {
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": OCTETS,
            "Content-Length": str(end - offset),
        }
        response = await self._request(
            "PATCH", self._url(), headers=headers, content=self._body(offset, end)
        )
        if response.status_code in (404, 410):
            self._lost(f"PATCH {response.status_code}")
        if response.status_code != 204:
            raise Unexpected(f"PATCH {response.status_code}")
        return self._saw_offset(int(response.headers["Upload-Offset"]))

    async def _body(self, start: int, end: int) -> AsyncIterator[bytes]:
        out = self.outcome
        view = memoryview(self.data)
        began = time.monotonic()
        for position in range(start, end, SEND_PIECE):
            piece = bytes(view[position : min(end, position + SEND_PIECE)])
            out.sent += len(piece)
            out.sent_upto = max(out.sent_upto, position + len(piece))
            yield piece
            if self.rate is not None:
                ahead = (position + len(piece) - start) / self.rate - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)

    def _lost(self, what: str) -> None:
        out = self.outcome
        out.lost.append(f"{what} for upload {out.upload_id} at acked offset {out.acked}")
        out.upload_id = None  # start over with a new upload
        raise Unexpected(what)

    async def _verify(self) -> None:
        out = self.outcome
        for _ in range(20):
            digest = hashlib.sha256()
            size = 0
            try:
                async with self.http.stream("GET", self._url(), headers=TUS) as response:
                    if response.status_code != 200:
                        out.errors[f"GET {response.status_code}"] += 1
                        await asyncio.sleep(0.2)
                        continue
                    async for piece in response.aiter_bytes():
                        digest.update(piece)
                        size += len(piece)
            except httpx.TransportError as exc:
                out.errors[f"GET {type(exc).__name__}"] += 1
                await asyncio.sleep(0.2)
                continue
            out.verified = (size, digest.hexdigest()) == (out.size, out.sha256)
            if not out.verified:
                out.detail = f"downloaded {size} bytes with SHA-256 {digest.hexdigest()}"
            return
        out.detail = "could not download the finished upload"


def http_client(read_timeout: float = 20.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(read_timeout, connect=2.0),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
    )


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The figures every scenario reports about its uploads."""
    completed = [o for o in outcomes if o.completed]
    verified = [o for o in outcomes if o.verified]
    total = sum(o.size for o in outcomes)
    sent = sum(o.sent for o in outcomes)
    errors: Counter[str] = Counter()
    for o in outcomes:
        errors.update(o.errors)
    return {
        "uploads_started": len(outcomes),
        "uploads_completed": len(completed),
        "uploads_verified_sha256": len(verified),
        "bytes_total": total,
        "bytes_sent": sent,
        "bytes_resent": sent - total,
        "bytes_resent_beyond_protocol": sum(o.resent_beyond_protocol for o in outcomes),
        "offset_regressions": sum(len(o.regressions) for o in outcomes),
        "offsets_past_sent_bytes": sum(len(o.overshoots) for o in outcomes),
        "uploads_lost": sum(len(o.lost) for o in outcomes),
        "orphaned_creations": sum(max(0, o.created - 1) for o in outcomes),
        "requests": sum(o.requests for o in outcomes),
        "client_errors": dict(errors.most_common()),
    }


def failures(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per upload that did not end as promised."""
    lines = []
    for o in outcomes:
        if not o.verified or o.violations:
            lines.append(
                f"{o.name} ({o.size} B, id {o.upload_id}): completed={o.completed} "
                f"verified={o.verified} {o.detail} violations={o.violations} "
                f"errors={dict(o.errors)} offsets={o.offsets[-12:]}"
            )
    return lines
