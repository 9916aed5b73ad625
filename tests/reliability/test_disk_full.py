"""Disk full under the file store: the PATCH that runs out of space answers 507 with a message,
the offset and the stored bytes stay consistent, and the upload resumes once space is freed.

The suite mounts a small tmpfs for the upload directory (as root, or through `sudo -n`). Where it
cannot (or TUSD_RELIABILITY_NO_MOUNT=1), the same scenario runs in process against a file store
whose writes fail with ENOSPC past a quota, which takes the store's own error path; the figures
say which one ran.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.backends import MiB, payload
from tests.reliability.figures import record
from tests.support.mounts import small_disk
from tests.support.servers import RedisServer, unique_prefix
from tests.support.tusd_process import TusdProcess
from tusd_py.app import create_app
from tusd_py.config import Config
from tusd_py.locking.memory import MemoryLocker
from tusd_py.protocol.context import TusContext
from tusd_py.state.local import LocalState
from tusd_py.stores import file as file_store
from tusd_py.stores.file import FileStore

TUS = {"Tus-Resumable": "1.0.0"}
DISK = 8 * MiB
BALLAST = 2 * MiB
UPLOAD = 7 * MiB


def patch(client: httpx.Client, url: str, offset: int, data: bytes) -> httpx.Response:
    return client.patch(
        url,
        content=data,
        headers={
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        },
    )


def create(client: httpx.Client, endpoint: str, length: int) -> httpx.Response:
    return client.post(endpoint, headers={**TUS, "Upload-Length": str(length)})


def run_scenario(
    client: httpx.Client, endpoint: str, stored: Callable[[str], bytes | None]
) -> dict[str, Any]:
    """Fill the disk with a ballast upload, run an upload into the wall, free the ballast,
    resume. `stored(id)` reads an upload's bytes from the store (None where it cannot)."""
    figures: dict[str, Any] = {}
    ballast_url = create(client, endpoint, BALLAST).headers["Location"]
    assert patch(client, ballast_url, 0, payload(1, BALLAST)).status_code == 204

    data = payload(2, UPLOAD)
    created = create(client, endpoint, len(data))
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    upload_id = url.rsplit("/", 1)[-1]
    full = patch(client, url, 0, data)
    figures["patch_into_full_disk"] = f"{full.status_code} {full.text.strip()}"
    assert full.status_code == 507, full.text
    assert "disk is full" in full.text

    statuses = []
    offsets = []
    for _ in range(3):  # while still full: HEAD is consistent, PATCHes keep answering 507
        head = client.head(url, headers=TUS)
        assert head.status_code == 200, head.text
        offset = int(head.headers["Upload-Offset"])
        offsets.append(offset)
        on_disk = stored(upload_id)
        if on_disk is not None:
            assert len(on_disk) >= offset and on_disk[:offset] == data[:offset]
        statuses.append(patch(client, url, offset, data[offset:]).status_code)
    figures["offsets_while_full"] = offsets
    figures["patch_statuses_while_full"] = statuses
    assert all(status == 507 for status in statuses), statuses
    assert offsets == sorted(offsets)
    creation = create(client, endpoint, 10).status_code
    figures["creation_while_full"] = creation
    assert creation in (201, 507)

    assert client.delete(ballast_url, headers=TUS).status_code == 204  # space is freed
    offset = int(client.head(url, headers=TUS).headers["Upload-Offset"])
    resumed = patch(client, url, offset, data[offset:])
    figures["resumed_from_offset"] = offset
    figures["patch_after_space_freed"] = resumed.status_code
    assert resumed.status_code == 204, resumed.text
    download = client.get(url, headers=TUS)
    figures["sha256_after_resume_matches"] = (
        hashlib.sha256(download.content).digest() == hashlib.sha256(data).digest()
    )
    assert figures["sha256_after_resume_matches"]
    return figures


@pytest.mark.parametrize("state", ["local", "redis"])
def test_disk_full(state: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    disk = tmp_path / "disk"
    extra: tuple[str, ...] = ("--log-level", "warning")
    if state == "redis":
        redis: RedisServer = request.getfixturevalue("redis")
        extra += ("--redis-url", redis.url, "--redis-prefix", unique_prefix())
    with small_disk(disk, DISK) as mounted:
        if mounted:
            server = TusdProcess(disk, extra)
            try:
                with httpx.Client(timeout=30) as client:

                    def stored(upload_id: str) -> bytes | None:
                        return (disk / upload_id).read_bytes()

                    figures = run_scenario(client, server.endpoint, stored)
            finally:
                server.stop()
                print(server.output[-3000:])
            how = f"tmpfs of {DISK} bytes, server process"
        else:
            figures = in_process_scenario(tmp_path / "quota", state, request)
            how = f"ENOSPC injected past {DISK} bytes, in process (no mount possible)"
    record(f"disk-full-{state}", {"disk": how, **figures})


def fill_disk_past(quota: int, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file store's writes that would take `directory` past `quota` bytes fail with ENOSPC,
    as a full disk's do (the store maps the error where it writes)."""
    write_all = file_store._write_all

    def limited(f: io.FileIO, pieces: list[bytes]) -> None:
        used = sum(entry.stat().st_size for entry in os.scandir(directory))
        if used + sum(len(piece) for piece in pieces) > quota:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_all(f, pieces)

    monkeypatch.setattr(file_store, "_write_all", limited)


def in_process_scenario(
    directory: Path, state: str, request: pytest.FixtureRequest
) -> dict[str, Any]:
    import asyncio
    import threading

    import uvicorn

    settings: dict[str, Any] = {"upload_dir": str(directory)}
    if state == "redis":
        redis: RedisServer = request.getfixturevalue("redis")
        settings |= {"redis_url": redis.url, "redis_prefix": unique_prefix()}
    config = Config(**settings)
    directory.mkdir(parents=True, exist_ok=True)
    fill_disk_past(DISK, directory, request.getfixturevalue("monkeypatch"))
    store = FileStore(directory)
    if state == "redis":
        from tusd_py.redis_backends import build_redis_backends

        state_store, locker = build_redis_backends(config, store)
        ctx = TusContext(config, store, state_store, locker)
    else:
        ctx = TusContext(config, store, LocalState(store), MemoryLocker(10.0))
    app = create_app(config, context=ctx)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    try:
        while not server.started:
            threading.Event().wait(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(timeout=30) as client:
            return run_scenario(
                client,
                f"http://127.0.0.1:{port}/files/",
                lambda upload_id: (directory / upload_id).read_bytes(),
            )
    finally:
        server.should_exit = True
        thread.join(10)
