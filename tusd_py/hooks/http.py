"""HTTP hooks: POST the event as JSON to a receiver and read its JSON answer.

The client is aiohttp, which aiobotocore already depends on: a pooled, async HTTP/1.1 client with
timeouts, at no new dependency. httpx would be the other obvious choice, but it is only a test
dependency here, and a hand-written client on asyncio streams would have to re-implement
chunked decoding, keep-alive and TLS for no gain.

pre-* and post-* events travel through two pools, each its own aiohttp session and connector:
the client waits for a pre-* answer, and a receiver that is slow to answer post-* events must
not take the connections it needs. A pool bounds its requests in flight with a semaphore, and
the wait for one of its slots is bounded by the timeout separately, before the try's own
timeout starts (aiohttp's `total` would count the wait against the try).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable

import aiohttp

from tusd_py.hooks.types import (
    HookError,
    HookEvent,
    HookResponse,
    HookType,
    canonical_header,
    snippet,
)

log = logging.getLogger("tusd_py.hooks")

# tusd caps a hook answer too; a receiver has no reason to send more than a small JSON object.
MAX_RESPONSE_BYTES = 64 * 1024


# Requests in flight to the receiver for pre-* events; post-* deliveries have the runner's
# worker count (runner.py) as theirs.
PRE_CONNECTIONS = 100


class HttpHookClient:
    """Delivers hook events to one URL, retrying network errors and 5xx answers."""

    def __init__(
        self,
        url: str,
        *,
        retries: int = 3,
        backoff: float = 1.0,
        timeout: float = 15.0,
        forward_headers: Iterable[str] = (),
        pre_connections: int = PRE_CONNECTIONS,
        post_connections: int = 16,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the hook URL must start with http:// or https://, got {url!r}")
        self.url = url
        self.retries = max(0, retries)
        self.backoff = backoff
        self.timeout = timeout
        self.forward_headers = [canonical_header(h.strip()) for h in forward_headers if h.strip()]
        self._pre = _Pool(pre_connections, timeout)
        self._post = _Pool(post_connections, timeout)

    def handles(self, hook_type: HookType) -> bool:
        return True  # the receiver decides what to do with each event

    async def close(self) -> None:
        await self._pre.close()
        await self._post.close()

    async def call(self, event: HookEvent) -> HookResponse:
        body = json.dumps(event.to_json(), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        for name in self.forward_headers:
            value = event.request.header(name)
            if value is not None:
                headers[name] = value
        pool = self._pre if event.type.blocking else self._post
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                status, answer = await pool.post(self.url, body, headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
            else:
                if 200 <= status < 300:
                    return HookResponse.from_answer(answer, "the receiver's answer")
                problem = f"the receiver answered {status}: {snippet(answer)}"
                if status < 500:
                    raise HookError(problem)  # a deliberate answer; retrying will not change it
            if attempt < attempts:
                log.warning(
                    "%s hook to %s failed (%s); retry %d of %d in %.1fs",
                    event.type.value,
                    self.url,
                    problem,
                    attempt,
                    self.retries,
                    self.backoff,
                )
                await asyncio.sleep(self.backoff)
        raise HookError(f"{problem} (after {attempts} attempts)")


class _Pool:
    """One aiohttp session with at most `size` requests in flight."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size = max(1, size)
        self.timeout = timeout
        self._slots = asyncio.Semaphore(self.size)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use so that it belongs to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                # The semaphore is the bound: aiohttp's own wait would count against `total`.
                connector=aiohttp.TCPConnector(limit=0),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._slots = asyncio.Semaphore(self.size)  # a next session may live in another loop

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError:
            # Not retried: the receiver is not failing, it is busy with all our connections.
            raise HookError(
                f"all {self.size} connections to the receiver stayed busy for {self.timeout:g}s"
            ) from None
        try:
            async with self._client().post(url, data=body, headers=headers) as response:
                answer = await response.content.read(MAX_RESPONSE_BYTES + 1)
                if len(answer) > MAX_RESPONSE_BYTES:
                    raise HookError(
                        f"the receiver's answer is larger than {MAX_RESPONSE_BYTES} bytes"
                    )
                return response.status, answer
        finally:
            self._slots.release()
