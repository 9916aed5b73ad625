"""Answers sent before the request body was read reach the client cleanly.

A server that answers early (a wrong offset, an unknown upload, a body too large, a lock handed
over to another request) and closes while the client is still sending makes the client's send
fail with a reset; many clients then report the reset, not the answer, and some TCP stacks drop
the unread answer. The server now drains the rest of a body within bounds before closing.

The client here sends its whole body before reading, as simple clients do. Figures, per case:
requests whose body went out without a send error and whose answer was read ("clean"), out of
requests made.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.reliability.backends import MiB
from tests.reliability.conftest import Scale
from tests.reliability.figures import record
from tests.reliability.rawhttp import read_answer
from tests.support.tusd_process import TusdProcess

TUS = {"Tus-Resumable": "1.0.0"}
PIECE = 64 * 1024


def create(endpoint: str, length: int) -> str:
    response = httpx.post(endpoint, headers={**TUS, "Upload-Length": str(length)})
    return "/files/" + str(response.headers["Location"]).rsplit("/", 1)[-1]


def send_patch(
    port: int, path: str, offset: int, body_size: int, slow_first: int = 0, expect: str = ""
) -> str:
    """PATCH a body of `body_size` bytes (the first `slow_first` bytes over half a second), then
    read the answer. Returns "clean <status>", "send failed, <status>" or "send failed, nothing"."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
            f"Content-Length: {body_size}\r\n{expect}\r\n"
        )
        failed = False
        try:
            sock.sendall(head.encode())
            sent = 0
            while sent < body_size:
                piece = min(PIECE, body_size - sent)
                sock.sendall(b"x" * piece)
                sent += piece
                if sent < slow_first:
                    time.sleep(0.5 * PIECE / slow_first)
        except OSError:
            failed = True
        answer = read_answer(sock, 5)
    status = str(answer.status) if answer.status else "nothing"
    return f"send failed, {status}" if failed else f"clean {status}"


def test_early_answers_reach_the_client(tmp_path: Path, scale: Scale) -> None:
    tries = scale.pick(10, 50)
    server = TusdProcess(tmp_path / "uploads", ("--log-level", "warning"))
    results: dict[str, Counter[str]] = {}
    try:
        endpoint = server.endpoint
        port = int(endpoint.split(":")[2].split("/")[0])
        upload = create(endpoint, 64 * MiB)
        cases: dict[str, Callable[[], str]] = {
            "409 wrong offset, 4 MiB body": lambda: send_patch(port, upload, 7, 4 * MiB),
            "404 unknown upload, 4 MiB body": lambda: send_patch(
                port, "/files/" + "0" * 32, 0, 4 * MiB
            ),
            "413 past the length, 4 MiB body": lambda: send_patch(
                port, create(endpoint, MiB), 0, 4 * MiB
            ),
        }
        for name, run in cases.items():
            results[name] = Counter(run() for _ in range(tries))

        handover: Counter[str] = Counter()
        for _ in range(tries):
            target = create(endpoint, 8 * MiB)
            url = endpoint + target.rsplit("/", 1)[-1]

            def head_soon(url: str = url) -> None:
                time.sleep(0.25)
                httpx.head(url, headers=TUS)

            helper = threading.Thread(target=head_soon)
            helper.start()
            handover[send_patch(port, target, 0, 8 * MiB, slow_first=MiB)] += 1
            helper.join()
        results["204 to a PATCH handed over to a HEAD, 8 MiB body"] = handover

        # A client that waits for 100 Continue is not kept waiting for a body it never sends.
        started = time.monotonic()
        continued = send_patch(port, upload, 7, 0, expect="Expect: 100-continue\r\n")
        waited = time.monotonic() - started
    finally:
        server.stop()
    figures: dict[str, object] = {
        name: {
            "clean": counts[f"clean {name.split(' ')[0]}"],
            "of": tries,
            "outcomes": dict(counts),
        }
        for name, counts in results.items()
    }
    figures["expect_100_continue"] = f"{continued} after {waited:.2f} s"
    record("early-answers", figures)
    unclean = {
        name: counts
        for name, counts in results.items()
        if counts[f"clean {name.split(' ')[0]}"] != tries
    }
    assert not unclean, unclean
    assert continued == "clean 409" and waited < 1.0
