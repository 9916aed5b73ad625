"""The file-store limit: the least an ASGI app on uvicorn must do to take a tus upload.

POST answers 201 with a Location; PATCH appends its body to that file with a plain blocking
`write()` per ASGI chunk, on the event loop (no thread hop, no buffering, no state file, no
lock), and answers 204 with the new Upload-Offset. HEAD answers the offset. That is just enough
protocol for tus-js-client and curl, so the same clients feed it as feed the real servers.

    python -m benchmarks.sink --port 8081 --dir /tmp/sink
"""

from __future__ import annotations

import argparse
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import uvicorn

Scope = dict[str, Any]
Message = dict[str, Any]


class Sink:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        method, path = scope["method"], scope["path"]
        upload_id = path.rstrip("/").rsplit("/", 1)[-1]
        if method == "POST":
            upload_id = uuid.uuid4().hex
            self.directory.joinpath(upload_id).touch()
            self.offsets[upload_id] = 0
            await _answer(send, 201, [(b"location", f"/files/{upload_id}".encode())])
        elif method == "PATCH" and upload_id in self.offsets:
            written = 0
            # Blocking writes on the event loop, on purpose: no thread hop is cheaper.
            with open(self.directory / upload_id, "ab") as f:  # noqa: ASYNC230
                more = True
                while more:
                    message: Message = await receive()
                    if message["type"] == "http.disconnect":
                        break
                    body = message.get("body", b"")
                    f.write(body)
                    written += len(body)
                    more = message.get("more_body", False)
            self.offsets[upload_id] += written
            await _answer(send, 204, [(b"upload-offset", str(self.offsets[upload_id]).encode())])
        elif method == "HEAD" and upload_id in self.offsets:
            offset = str(self.offsets[upload_id]).encode()
            await _answer(send, 200, [(b"upload-offset", offset), (b"cache-control", b"no-store")])
        else:
            await _answer(send, 404, [])


async def _answer(send: Any, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"tus-resumable", b"1.0.0"), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        Sink(args.dir),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    print(f"sink listening on http://127.0.0.1:{port}/files/", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
