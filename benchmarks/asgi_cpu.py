"""CPU per HEAD or small PATCH of one upload, the ASGI app called in a loop (no sockets).

    cd <tree> && PYTHONPATH=<tree> <repo>/.venv/bin/python -m benchmarks.asgi_cpu [--patch SIZE]
        [--redis] [label]

What the server's own code costs per request, without uvicorn, the client or the network, and
measured as process CPU time, so it holds up on a busy machine better than requests per second.
`--patch 65536` sends PATCHes of that many bytes instead of HEADs (a fresh upload per run, removed
after it); `--redis` keeps the state in a redis-server of its own (tests/support), whose CPU is
not counted. Compare two trees (e.g. a `git archive` of an older commit) by running it in each,
interleaved, from each tree's own directory: `python -m` puts the current directory first on
`sys.path`, ahead of PYTHONPATH, so run from the checkout it measures the checkout whatever
PYTHONPATH says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.types import ASGIApp, Message

from tusd_py.app import create_app
from tusd_py.config import Config

WARM_UP = 2000
RUNS = 5
PER_RUN = {"HEAD": 5000, "PATCH": 1000}


def http_scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 5555),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "state": {},
    }


@contextlib.contextmanager
def redis_url(wanted: bool) -> Iterator[str | None]:
    if not wanted:
        yield None
        return
    from tests.support.servers import redis_server

    with redis_server() as server:
        yield server.url


class Client:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def call(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> int:
        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        self.sent.clear()
        await self.app(http_scope(method, path, headers), receive, self.send)
        status: int = self.sent[0]["status"]
        return status

    async def create(self, length: int) -> str:
        create = {"Tus-Resumable": "1.0.0", "Upload-Length": str(length), "Host": "t"}
        assert await self.call("POST", "/files/", create) == 201, self.sent
        location: str = dict(self.sent[0]["headers"])[b"location"].decode()
        return "/files/" + location.rsplit("/", 1)[1]


def head_loop(client: Client, path: str) -> Callable[[int], Awaitable[None]]:
    scope = http_scope("HEAD", path, {"Tus-Resumable": "1.0.0", "Host": "t"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def run(count: int) -> None:
        client.sent.clear()
        for _ in range(count):
            await client.app(dict(scope), receive, client.send)
        assert client.sent[0]["status"] == 200, client.sent[0]

    return run


def patch_loop(client: Client, size: int) -> Callable[[int], Awaitable[None]]:
    body = b"a" * size

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def run(count: int) -> None:
        path = await client.create(2**40)
        headers = {
            "Tus-Resumable": "1.0.0",
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(size),
            "Host": "t",
        }
        for i in range(count):
            scope = http_scope("PATCH", path, {**headers, "Upload-Offset": str(i * size)})
            client.sent.clear()
            await client.app(scope, receive, client.send)
        assert client.sent[0]["status"] == 204, client.sent
        assert await client.call("DELETE", path, {"Tus-Resumable": "1.0.0"}) == 204

    return run


async def main(label: str, patch: int, redis: str | None) -> None:
    directory = tempfile.mkdtemp(prefix="tusd-asgi-cpu-")
    config = Config(upload_dir=directory, metrics=True, redis_url=redis)
    app = create_app(config)
    client = Client(app)
    method = "PATCH" if patch else "HEAD"
    try:
        async with app.router.lifespan_context(app):
            run = patch_loop(client, patch) if patch else head_loop(client, await client.create(10))
            await run(WARM_UP // 10 if patch else WARM_UP)
            costs = []
            for _ in range(RUNS):
                start = time.process_time()
                await run(PER_RUN[method])
                costs.append((time.process_time() - start) / PER_RUN[method] * 1e6)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    what = f"{method} {patch} B" if patch else method
    print(f"{label}: µs of CPU per {what}, {RUNS} runs:", " ".join(f"{c:.1f}" for c in costs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("label", nargs="?", default="")
    parser.add_argument("--patch", type=int, default=0, help="PATCH body size (0: HEADs)")
    parser.add_argument("--redis", action="store_true", help="state in a redis-server")
    args = parser.parse_args()
    with redis_url(args.redis) as url:
        asyncio.run(main(args.label or ("redis" if args.redis else "local"), args.patch, url))
