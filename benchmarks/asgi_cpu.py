"""CPU per HEAD of one upload with local state, the ASGI app called in a loop (no sockets).

    PYTHONPATH=<tree> .venv/bin/python -m benchmarks.asgi_cpu [label]

What the server's own code costs per request, without uvicorn, the client or the network, and
measured as process CPU time, so it holds up on a busy machine better than requests per second.
Compare two trees (e.g. a `git archive` of an older commit) by running it in each, interleaved.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from typing import Any

from starlette.types import Message

from tusd_py.app import create_app
from tusd_py.config import Config

WARM_UP = 2000
RUNS = 5
PER_RUN = 5000


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


async def main(label: str) -> None:
    app = create_app(Config(upload_dir=tempfile.mkdtemp(), metrics=True))
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async with app.router.lifespan_context(app):
        create = {"Tus-Resumable": "1.0.0", "Upload-Length": "10", "Host": "t"}
        await app(http_scope("POST", "/files/", create), receive, send)
        location = dict(sent[0]["headers"])[b"location"].decode()
        head = http_scope("HEAD", "/files/" + location.rsplit("/", 1)[1], {})
        head["headers"] = [(b"tus-resumable", b"1.0.0"), (b"host", b"t")]
        for _ in range(WARM_UP):
            await app(dict(head), receive, send)
        costs = []
        for _ in range(RUNS):
            sent.clear()
            start = time.process_time()
            for _ in range(PER_RUN):
                await app(dict(head), receive, send)
            costs.append((time.process_time() - start) / PER_RUN * 1e6)
            assert sent[0]["status"] == 200, sent[0]
    print(f"{label}: µs of CPU per HEAD, {RUNS} runs:", " ".join(f"{c:.1f}" for c in costs))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "HEAD"))
