"""Abusive clients against a real server process: slowloris on heads and bodies, thousands of
idle connections, oversized heads and metadata, path traversal and id guessing.

Figures: how long a trickled head or body holds a connection, how long a lock stays with a
trickling PATCH when another request wants it, what thousands of idle connections cost an
honest client, and how many traversal paths and id guesses got anywhere (must be 0).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import resource
import secrets
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.reliability.backends import KiB, MiB
from tests.reliability.conftest import Scale
from tests.reliability.figures import record
from tests.reliability.rawhttp import answered_or_closed, read_answer, request, trickle
from tests.support.tusd_process import TusdProcess

TUS = {"Tus-Resumable": "1.0.0"}
HEAD_TIMEOUT = 1.5
READ_TIMEOUT = 2.0
LIMITS = (
    "--header-timeout", f"{HEAD_TIMEOUT}s",
    "--read-timeout", f"{READ_TIMEOUT}s",
    "--body-min-rate", "1KiB",
    "--log-level", "warning",
)  # fmt: skip


@contextlib.contextmanager
def server(upload_dir: Path, *args: str) -> Iterator[TusdProcess]:
    process = TusdProcess(upload_dir, (*LIMITS, *args))
    try:
        yield process
    finally:
        process.stop()
        print(process.output[-5000:])


def port_of(process: TusdProcess) -> int:
    match = re.search(r":(\d+)/", process.endpoint)
    assert match is not None
    return int(match[1])


def create(process: TusdProcess, length: int) -> str:
    response = httpx.post(
        process.endpoint, headers={**TUS, "Upload-Length": str(length)}, timeout=10
    )
    assert response.status_code == 201, response.text
    return str(response.headers["Location"])


def patch_head(path: str, offset: int, length: int) -> bytes:
    return (
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: {offset}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_slowloris(tmp_path: Path) -> None:
    """Heads and bodies trickled a byte at a time are cut off; the bytes of a body are kept, and
    a trickling PATCH lets go of its lock as soon as another request asks."""
    with server(tmp_path / "uploads") as tusd:
        port = port_of(tusd)
        figures: dict[str, object] = {
            "head_timeout_s": HEAD_TIMEOUT,
            "read_timeout_s": READ_TIMEOUT,
        }

        # A head trickled a byte every 0.2 s, on a fresh and on a kept-alive connection.
        head_start = b"HEAD /files/abc HTTP/1.1\r\nHost: x\r\nX-Slow: "
        for case in ("first request", "second request"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                if case == "second request":
                    sock.sendall(f"OPTIONS /files/ HTTP/1.1\r\nHost: x:{port}\r\n\r\n".encode())
                    assert read_answer(sock, 5).status == 204
                sock.sendall(head_start)
                answer, held = trickle(sock, b"a", 0.2, HEAD_TIMEOUT + 5)
            assert held < HEAD_TIMEOUT + 1.5, f"{case}: a trickled head held on for {held:.1f} s"
            assert answer.status in (0, 408), answer
            figures[f"trickled_head_cut_after_s ({case})"] = round(held, 2)

        # A connection that sends nothing at all.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            started = time.monotonic()
            sock.settimeout(HEAD_TIMEOUT + 5)
            assert sock.recv(100) == b""
            figures["silent_connection_closed_after_s"] = round(time.monotonic() - started, 2)

        # A body trickled a byte every 0.2 s after a first burst.
        url = create(tusd, 64 * KiB)
        path = "/files/" + url.rsplit("/", 1)[-1]
        burst = 1000
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(patch_head(path, 0, 64 * KiB) + b"b" * burst)
            answer, held = trickle(sock, b"b", 0.2, READ_TIMEOUT * 4)
        assert answer.status == 204, answer
        kept = int(answer.headers["upload-offset"])
        assert burst <= kept <= burst + held / 0.2 + 1
        assert held < READ_TIMEOUT * 2 + 1, f"a trickled body held on for {held:.1f} s"
        head = httpx.head(url, headers=TUS, timeout=5)
        assert head.headers["Upload-Offset"] == str(kept)
        figures["trickled_body_cut_after_s"] = round(held, 2)
        figures["trickled_body_bytes_kept"] = kept

        # Another request for the same upload takes the lock from a trickling PATCH at once.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(patch_head(path, kept, 100) + b"c")
            time.sleep(0.3)
            started = time.monotonic()
            head = httpx.head(url, headers=TUS, timeout=10)
            waited = time.monotonic() - started
            assert head.status_code == 200
            answer = read_answer(sock, 5)
        assert waited < 2.0, f"HEAD waited {waited:.2f} s for a trickling PATCH's lock"
        assert answer.status == 204, answer
        figures["lock_taken_from_trickling_patch_after_s"] = round(waited, 3)
        record("abusive-slowloris", figures)


@contextlib.contextmanager
def soft_open_file_limit(limit: int) -> Iterator[None]:
    """Processes started inside the block inherit this soft limit on open files (the common
    default of 1024), the way a server is often started."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_file_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def honest_upload(process: TusdProcess, size: int) -> float:
    data = os.urandom(size)
    started = time.monotonic()
    url = create(process, size)
    response = httpx.patch(
        url,
        content=data,
        headers={
            **TUS,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=10,
    )
    assert response.status_code == 204, response.text
    download = httpx.get(url, headers=TUS, timeout=10)
    assert hashlib.sha256(download.content).digest() == hashlib.sha256(data).digest()
    return time.monotonic() - started


def test_thousands_of_idle_connections(tmp_path: Path, scale: Scale) -> None:
    """Idle connections do not lock honest clients out, and are closed after the head timeout.

    The server is started with the common soft limit of 1024 open files; it raises that to the
    hard limit itself, as each connection is a file descriptor.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this test opens them all
    wanted = scale.pick(3000, 10000)
    count = max(0, min(wanted, hard - 1000))
    head_timeout = 6.0
    sockets: list[socket.socket] = []
    try:
        with soft_open_file_limit(1024):
            process = TusdProcess(
                tmp_path / "uploads", (*LIMITS, "--header-timeout", f"{head_timeout}s")
            )
        try:
            limit = open_file_limit(process.proc.pid)
            baseline = honest_upload(process, MiB)
            rss_before = rss_kib(process.proc.pid)
            port = port_of(process)
            for _ in range(count):
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            opened = time.monotonic()  # each one's head timeout runs from its own accept
            time.sleep(0.5)
            latency = honest_upload(process, MiB)
            rss_after = rss_kib(process.proc.pid)
            still_open = count - answered_or_closed(sockets)
            closed = 0
            while closed < count and time.monotonic() - opened < head_timeout + 5.0:
                time.sleep(0.5)
                closed = answered_or_closed(sockets)
            closed_after = time.monotonic() - opened
        finally:
            process.stop()
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    record(
        "abusive-idle-connections",
        {
            "idle_connections": count,
            "server_open_file_limit": f"1024 at start, raised to {limit}",
            "honest_upload_1mib_s": {"alone": round(baseline, 3), "among idle": round(latency, 3)},
            "server_rss_kib": {"before": rss_before, "with idle connections": rss_after},
            "idle_connections_open_before_head_timeout": still_open,
            "idle_connections_closed_after_head_timeout": closed,
            "all_closed_within_s_of_the_last_connect": round(closed_after, 1),
        },
    )
    assert limit > 1024 or hard <= 1024
    assert latency < 5.0
    assert still_open == count, "idle connections were dropped before the head timeout"
    assert closed == count, f"{count - closed} idle connections outlived the head timeout"


def test_oversized_heads_and_metadata(tmp_path: Path) -> None:
    """Too large request heads are refused with a 4xx before they cost memory; so is metadata
    over its own limit."""
    with server(tmp_path / "uploads") as tusd:
        port = port_of(tusd)
        rss_before = rss_kib(tusd.proc.pid)
        statuses: dict[str, int] = {}
        big = "a" * (100 * KiB)
        statuses["one 100 KiB header"] = request(port, "HEAD", "/files/x", [("X-Big", big)]).status
        many = [(f"X-H{i}", "v" * 16) for i in range(5000)]
        statuses["5000 headers"] = request(port, "OPTIONS", "/files/", many).status
        statuses["100 KiB path"] = request(port, "GET", "/files/" + big).status
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            # 64 MiB of one header value, or until the server stops reading.
            sock.sendall(b"OPTIONS /files/ HTTP/1.1\r\nHost: x\r\nX-Huge: ")
            sent = 0
            with contextlib.suppress(OSError):
                while sent < 64 * MiB:
                    sock.sendall(b"h" * MiB)
                    sent += MiB
            answer = read_answer(sock, 5)
            statuses["endless header"] = answer.status
        rss_after = rss_kib(tusd.proc.pid)
        metadata = "filename " + "QUFB" * (9 * KiB // 4)
        response = httpx.post(
            tusd.endpoint,
            headers={**TUS, "Upload-Length": "10", "Upload-Metadata": metadata},
            timeout=10,
        )
        statuses["9 KiB Upload-Metadata"] = response.status_code
        assert "Upload-Metadata" in response.text
        digits = "9" * 5000
        statuses["5000-digit Upload-Length"] = request(
            port, "POST", "/files/", [("Tus-Resumable", "1.0.0"), ("Upload-Length", digits)]
        ).status
        alive = httpx.options(tusd.endpoint, timeout=5).status_code
    record(
        "abusive-oversized-heads",
        {
            "statuses": statuses,
            "endless_header_bytes_sent_before_refusal": sent,
            "server_rss_kib": {"before": rss_before, "after": rss_after},
        },
    )
    assert all(400 <= status < 500 for status in statuses.values()), statuses
    assert statuses["one 100 KiB header"] == 431
    assert alive == 204
    assert rss_after - rss_before < 32 * KiB, "the server buffered an endless header"


TRAVERSALS = [
    "/files/../../../../etc/passwd",
    "/files/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/files/%252e%252e%252fetc%252fpasswd",
    "/files/....//....//etc/passwd",
    "/files/..\\..\\..\\etc\\passwd",
    "/files/{id}.info",
    "/files/{id}%2e%69%6e%66%6f",
    "/files/{id}/../{id}",
    "/files/{id}/",
    "/files/{id}%00",
    "/files/{id}%00.info",
    "/files/{id}%2f..%2f{id}",
    "/files/{id};.info",
    "/files/.%2e/{id}",
    "/files/./{id}.info",
    "/files/~root",
    "/files/" + "a" * 129,
    "/files/%2fetc%2fpasswd",
    "/files//etc/passwd",
    "//files/../etc/passwd",
    "/files/..",
    "/files/.",
    "/files/%2e",
    "/files/*",
    "*",
    "http://127.0.0.1/files/../../etc/passwd",
]


def shared_prefix(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def test_path_traversal_and_id_guessing(tmp_path: Path, scale: Scale) -> None:
    """No path reaches anything but an upload by its exact id; ids cannot be guessed."""
    with server(tmp_path / "uploads") as tusd:
        port = port_of(tusd)
        data = b"the secret bytes of an upload"
        url = create(tusd, len(data))
        upload_id = url.rsplit("/", 1)[-1]
        response = httpx.patch(
            url,
            content=data,
            headers={
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            timeout=5,
        )
        assert response.status_code == 204
        stored_before = sorted(os.listdir(tmp_path / "uploads"))

        outcomes: Counter[int] = Counter()
        leaks = []
        for template in TRAVERSALS:
            target = template.replace("{id}", upload_id)
            for method in ("GET", "HEAD", "PATCH", "DELETE"):
                headers = [("Tus-Resumable", "1.0.0")]
                if method == "PATCH":
                    headers += [
                        ("Upload-Offset", "0"),
                        ("Content-Type", "application/offset+octet-stream"),
                    ]
                answer = request(port, method, target, headers, b"x" if method == "PATCH" else b"")
                outcomes[answer.status] += 1
                if answer.status < 400 or b"root:" in answer.body or data in answer.body:
                    leaks.append(f"{method} {target}: {answer.status} {answer.body[:80]!r}")

        ids = [create(tusd, 1).rsplit("/", 1)[-1] for _ in range(scale.pick(100, 1000))]
        shapes = {bool(re.fullmatch(r"[0-9a-f]{32}", i)) for i in ids}
        ordered = sorted(ids)
        longest_shared_prefix = max(shared_prefix(a, b) for a, b in itertools.pairwise(ordered))
        guesses = scale.pick(500, 5000)
        near = [upload_id[:-1] + c for c in "0123456789abcdef" if c != upload_id[-1]]
        near += [upload_id.upper(), upload_id[:16], upload_id + "0"]
        found = 0
        with httpx.Client(timeout=5) as client:
            for guess in [secrets.token_hex(16) for _ in range(guesses)] + near:
                status = client.head(tusd.endpoint + guess, headers=TUS).status_code
                found += status != 404
        still = httpx.get(url, headers=TUS, timeout=5)
        stored_after = sorted(os.listdir(tmp_path / "uploads"))
    record(
        "abusive-traversal-and-guessing",
        {
            "traversal_requests": sum(outcomes.values()),
            "traversal_statuses": dict(sorted(outcomes.items())),
            "traversal_leaks": len(leaks),
            "ids_created": len(ids),
            "id_format_128_bit_hex": shapes == {True},
            "longest_prefix_shared_by_two_ids": longest_shared_prefix,
            "id_guesses": guesses + len(near),
            "id_guesses_that_found_something": found,
        },
    )
    assert not leaks, leaks
    assert all(400 <= status < 500 for status in outcomes), outcomes
    assert shapes == {True} and len(set(ids)) == len(ids)
    assert longest_shared_prefix <= 8
    assert found == 0
    assert still.status_code == 200 and still.content == data
    assert stored_before == [name for name in stored_after if name in stored_before]
