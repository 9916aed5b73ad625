"""A real HTTP hook receiver for tests: aiohttp on a free loopback port, in the test's loop.

It records every hook request (JSON body and headers) and answers with what the test scripted
per hook type: a JSON object, a status, or a raw body; it can also hold the answer for a while
(`delay`, or `delays` per hook type) or close the connection without answering (`hang_up`).
`release()` ends every held answer at once, so a test never waits for a sleeping receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

Answer = tuple[int, Any]  # (status, JSON-able body, or bytes sent as they are)
Script = Callable[[dict[str, Any]], Answer]


@dataclass
class Delivery:
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def type(self) -> str:
        return str(self.body["Type"])

    @property
    def upload(self) -> dict[str, Any]:
        upload: dict[str, Any] = self.body["Event"]["Upload"]
        return upload

    @property
    def request(self) -> dict[str, Any]:
        request: dict[str, Any] = self.body["Event"]["HTTPRequest"]
        return request


@dataclass
class HookReceiver:
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    scripts: dict[str, Script] = field(default_factory=dict)
    delay: float = 0.0
    delays: dict[str, float] = field(default_factory=dict)
    hang_up: set[str] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        """Answer every request held by `delay`/`delays` now, and hold none from here on."""
        self.released.set()

    def answer(self, hook: str, status: int = 200, body: Any = None) -> None:
        """Answer every `hook` request with `status` and `body` (JSON unless bytes)."""
        self.scripts[hook] = lambda _: (status, body)

    def of(self, hook: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.type == hook]

    def types(self) -> list[str]:
        return [d.type for d in self.deliveries]

    async def wait_for(self, hook: str, count: int = 1, within: float = 5.0) -> list[Delivery]:
        async with asyncio.timeout(within):
            while len(self.of(hook)) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.of(hook)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.deliveries.append(Delivery(body, dict(request.headers)))
        self.arrived.set()
        delay = self.delays.get(body["Type"], self.delay)
        if delay and not self.released.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), delay)
        if body["Type"] in self.hang_up:
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("the receiver hung up")
        script = self.scripts.get(body["Type"])
        status, answer = script(body) if script is not None else (200, {})
        if isinstance(answer, bytes):
            return web.Response(status=status, body=answer)
        return web.Response(
            status=status,
            text="" if answer is None else json.dumps(answer),
            content_type="application/json",
        )


async def start_receiver() -> tuple[HookReceiver, web.AppRunner]:
    receiver = HookReceiver()
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/hooks"
    return receiver, runner


@pytest.fixture
async def receiver() -> AsyncIterator[HookReceiver]:
    """A hook receiver on a free port for one test; sleeping deliveries end with the test."""
    hook_receiver, runner = await start_receiver()
    try:
        yield hook_receiver
    finally:
        hook_receiver.release()
        await runner.cleanup()
