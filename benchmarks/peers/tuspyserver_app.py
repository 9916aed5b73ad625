"""tuspyserver (PyPI) as its README sets it up: a FastAPI app with the tus router, on uvicorn.

Runs in the peers' own venv (benchmarks/.peers/venv), never in the project's:

    benchmarks/.peers/venv/bin/python benchmarks/peers/tuspyserver_app.py <directory>

Listens on a free port and prints "listening on http://127.0.0.1:PORT/files/".
"""

from __future__ import annotations

import socket
import sys

import uvicorn
from fastapi import FastAPI
from tuspyserver import create_tus_router


def main() -> None:
    app = FastAPI()
    app.include_router(create_tus_router(prefix="files", files_dir=sys.argv[1]))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, loop="uvloop", http="httptools", log_level="warning")
    print(f"listening on http://127.0.0.1:{port}/files/", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
