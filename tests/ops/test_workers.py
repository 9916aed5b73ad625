"""`--workers 2`: real supervisor and worker processes on one port, local state and Redis state.

Which worker accepts a connection is the kernel's choice; the access lines carry `worker=N`, so
tests read from the log which worker served what, and repeat where they need two workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.servers import RedisServer, unique_prefix
from tests.support.socket_http import RawHTTP, patch_headers, raw_create
from tests.support.tus_requests import TUS, download_sha256, head, wait_until
from tests.support.tusd_process import TusdProcess
from tusd_py.supervisor import CRASH_LIMIT, RESTART_PAUSE_ENV

MiB = 1024 * 1024
CHUNK = 256 * 1024
ACCESS = re.compile(r"tusd_py\.access: (\w+) \S+/([0-9a-f]{32}) (\d{3}) .*\[worker=(\d)")


def served(server: TusdProcess) -> list[tuple[str, str, int, int]]:
    """(method, upload id, status, worker) of each access line so far."""
    return [
        (m[1], m[2], int(m[3]), int(m[4])) for line in server.lines if (m := ACCESS.search(line))
    ]


def create(endpoint: str, length: int, client: httpx.Client) -> str:
    response = client.post(endpoint, headers={**TUS, "Upload-Length": str(length)})
    assert response.status_code == 201, response.text
    return response.headers["Location"]


def upload_in_chunks(endpoint: str, data: bytes) -> str:
    with httpx.Client(timeout=60) as client:
        url = create(endpoint, len(data), client)
        for offset in range(0, len(data), CHUNK):
            response = client.patch(
                url,
                content=data[offset : offset + CHUNK],
                headers={
                    **TUS,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
            )
            assert response.status_code == 204, f"{response.status_code} {response.text}"
    return url


def many_uploads(server: TusdProcess, count: int = 40, size: int = 2 * MiB) -> None:
    payloads = [os.urandom(size) for _ in range(count)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        urls = list(pool.map(lambda data: upload_in_chunks(server.endpoint, data), payloads))
    for url, data in zip(urls, payloads, strict=True):
        assert download_sha256(url) == (size, hashlib.sha256(data).hexdigest())


def workers_started(server: TusdProcess) -> list[int]:
    match = re.search(r"workers serving \(pids ([\d, ]+)\)", server.output)
    assert match, server.output
    return [int(pid) for pid in match[1].split(", ")]


@pytest.fixture
def local_workers(tmp_path: Path) -> Iterator[TusdProcess]:
    server = TusdProcess(tmp_path / "uploads", ("--workers", "2"))
    try:
        yield server
    finally:
        server.stop()


def test_many_concurrent_uploads_land_whole_and_both_workers_serve(
    local_workers: TusdProcess,
) -> None:
    many_uploads(local_workers)
    workers = {worker for method, _, _, worker in served(local_workers) if method == "PATCH"}
    assert workers == {0, 1}, local_workers.output[-3000:]
    assert not list((local_workers.upload_dir / ".locks").iterdir())  # every lock given back


def test_many_concurrent_uploads_with_redis_state(tmp_path: Path, redis: RedisServer) -> None:
    server = TusdProcess(
        tmp_path / "uploads",
        ("--workers", "2", "--redis-url", redis.url, "--redis-prefix", unique_prefix()),
    )
    try:
        many_uploads(server, count=20)
        workers = {worker for method, _, _, worker in served(server) if method == "PATCH"}
        assert workers == {0, 1}, server.output[-3000:]
    finally:
        server.stop()


def stall_patch(url: str, offset: int) -> RawHTTP:
    """A PATCH whose body sends CHUNK bytes of a larger declared length and then waits."""
    conn = RawHTTP(url)
    conn.send_head("PATCH", patch_headers(offset, 4 * CHUNK))
    conn.send(b"s" * CHUNK)
    return conn


def test_a_stalled_patch_in_one_worker_is_handed_over_to_the_other(
    local_workers: TusdProcess,
) -> None:
    """HEAD and a second PATCH while a PATCH stalls: the holder commits what it has and
    answers; the newcomer goes on from there. Repeated until the two ran in different
    workers (the kernel picks the worker of each connection)."""
    across = 0
    for _ in range(16):
        url = raw_create(local_workers.endpoint, 2 * MiB)
        upload_id = url.rsplit("/", 1)[-1]
        first = stall_patch(url, 0)
        time.sleep(0.5)  # the bytes reach the server
        response = head(url)  # asks the stalled PATCH to let go, wherever it runs
        assert response.status_code == 200, response.text
        assert response.headers["Upload-Offset"] == str(CHUNK)
        assert first.read_response().status == 204
        first.close()
        second = stall_patch(url, CHUNK)
        time.sleep(0.5)
        rest = b"r" * (2 * MiB - 2 * CHUNK)
        response = httpx.patch(
            url,
            content=rest,
            headers={k: str(v) for k, v in patch_headers(2 * CHUNK, len(rest)).items()},
            timeout=30,
        )
        assert response.status_code == 204, response.text
        assert response.headers["Upload-Offset"] == str(2 * MiB)
        assert second.read_response().status == 204
        second.close()
        expected = hashlib.sha256(b"s" * 2 * CHUNK + rest).hexdigest()
        assert download_sha256(url) == (2 * MiB, expected)

        def all_logged(u: str = upload_id) -> bool:
            return len(_lines_of(local_workers, u)) >= 5

        assert wait_until(all_logged, 10)
        lines = _lines_of(local_workers, upload_id)
        patches = [worker for method, _, _, worker in lines if method == "PATCH"]
        heads = [worker for method, _, _, worker in lines if method == "HEAD"]
        across += heads[0] != patches[0] or patches[1] != patches[2]
        if across >= 2:
            break
    assert across >= 2, local_workers.output[-4000:]


def _lines_of(server: TusdProcess, upload_id: str) -> list[tuple[str, str, int, int]]:
    return [entry for entry in served(server) if entry[1] == upload_id]


def test_metrics_from_any_worker_count_the_whole_host(local_workers: TusdProcess) -> None:
    """Both workers created some of the uploads, and every scrape (on new connections, so
    either worker answers) counts all of them."""
    many_uploads(local_workers, count=12, size=CHUNK * 2)
    creators = {worker for method, _, _, worker in served(local_workers) if method == "PATCH"}
    assert creators == {0, 1}
    metrics_url = local_workers.endpoint.replace("/files/", "/metrics")
    created = set()
    for _ in range(10):
        text = httpx.get(metrics_url, headers={"Connection": "close"}).text
        match = re.search(r"^tusd_uploads_created_total (\S+)$", text, re.MULTILINE)
        assert match, text
        created.add(float(match[1]))
    assert created == {12.0}


def test_a_killed_worker_is_started_again_and_uploads_resume(local_workers: TusdProcess) -> None:
    data = os.urandom(2 * MiB)
    with httpx.Client(timeout=60) as client:
        url = create(local_workers.endpoint, len(data), client)
        patch = {**TUS, "Content-Type": "application/offset+octet-stream"}
        first = client.patch(url, content=data[:MiB], headers={**patch, "Upload-Offset": "0"})
        assert first.status_code == 204
    victim = workers_started(local_workers)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: "started it again as pid" in local_workers.output, 30), (
        local_workers.output[-3000:]
    )
    for _ in range(10):  # whichever worker answers, the upload goes on
        response = head(url)
        assert response.status_code == 200
        assert response.headers["Upload-Offset"] == str(MiB)
    with httpx.Client(timeout=60) as client:
        rest = client.patch(url, content=data[MiB:], headers={**patch, "Upload-Offset": str(MiB)})
        assert rest.status_code == 204, rest.text
    assert download_sha256(url) == (len(data), hashlib.sha256(data).hexdigest())
    local_workers.terminate()
    assert local_workers.wait(60) == 0, local_workers.output[-3000:]


def test_a_worker_that_dies_on_every_start_stops_the_server_with_status_1(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    server = TusdProcess(uploads, ("--workers", "2"), env={RESTART_PAUSE_ENV: "0.05"})
    try:
        victim = workers_started(server)[0]
        uploads.rename(tmp_path / "moved")
        uploads.write_text("not a directory")  # every new worker fails to open its store
        os.kill(victim, signal.SIGKILL)
        assert server.wait(60) == 1, server.output[-3000:]
    finally:
        server.stop()
    # Paused longer each time, then one line that says why the server stopped.
    pauses = re.findall(r"worker 0 .* starting it again in ([\d.]+) s", server.output)
    assert [float(p) for p in pauses] == [0.05, 0.1, 0.2, 0.4], server.output[-3000:]
    stopped = [line for line in server.lines if "stopping the server" in line]
    assert len(stopped) == 1, server.output[-3000:]
    assert f"worker 0 exited {CRASH_LIMIT} times in a row within 10 s of its start" in stopped[0]
    assert "ERROR" in stopped[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_worker_and_exits_0(
    local_workers: TusdProcess, sig: signal.Signals
) -> None:
    pids = workers_started(local_workers)
    local_workers.proc.send_signal(sig)
    assert local_workers.wait(60) == 0, local_workers.output[-3000:]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in _state(pid)
    assert "Traceback" not in local_workers.output


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def test_the_expiry_sweep_runs_in_one_worker_only(tmp_path: Path) -> None:
    server = TusdProcess(
        tmp_path / "uploads",
        ("--workers", "2", "--expiration", "1s", "--expiration-sweep-interval", "1s"),
    )
    try:
        for _ in range(5):
            raw_create(server.endpoint, 100)
        removed = re.compile(r"sweep removed (\d+) uploads.*\[worker=(\d)")

        def sweep_lines() -> list[tuple[int, int]]:
            return [(int(m[1]), int(m[2])) for line in server.lines if (m := removed.search(line))]

        assert wait_until(lambda: sum(n for n, _ in sweep_lines()) >= 5, 30), server.output
        time.sleep(2.5)  # two more sweep intervals: nobody else finds anything to remove
        assert sum(n for n, _ in sweep_lines()) == 5
        assert {worker for _, worker in sweep_lines()} == {0}
        assert not list((tmp_path / "uploads").glob("*.info"))
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--workers", "0"), "--workers must be 1 or more (or auto), got 0"),
        (("--workers", "lots"), "not a number of workers: 'lots'"),
        (
            ("--workers", "2", "--s3-bucket", "b"),
            "--workers above 1 with S3 or Azure storage needs --redis-url",
        ),
    ],
    ids=["zero", "lots", "s3-without-redis"],
)
def test_bad_worker_counts_are_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tusd_py", "--upload-dir", str(tmp_path), "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tusd-py: error: "), done.stderr
    assert message in lines[0]
    assert "TUSD_WORKERS" in lines[0]


def test_json_logs_name_the_worker(tmp_path: Path) -> None:
    server = TusdProcess(tmp_path / "uploads", ("--workers", "2", "--log-format", "json"))
    try:
        raw_create(server.endpoint, 10)
        access = '"logger": "tusd_py.access"'
        assert wait_until(lambda: any(access in line for line in server.lines), 10)
        entries = [json.loads(line) for line in server.lines if access in line]
        assert entries[0]["worker"] in (0, 1), entries
    finally:
        server.stop()


def test_auto_is_one_worker_per_core(tmp_path: Path) -> None:
    server = TusdProcess(tmp_path / "uploads", ("--workers", "auto"))
    try:
        if len(os.sched_getaffinity(0)) > 1:
            assert len(workers_started(server)) == len(os.sched_getaffinity(0))
        assert head(server.endpoint.replace("/files/", "/health")).status_code == 200
    finally:
        server.stop()
