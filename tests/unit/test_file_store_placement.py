"""Where the file store's data writes run: on the event loop while the disk is fast, in worker
threads for a while after one blocked."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tusd_py.info import UploadInfo
from tusd_py.stores import file as file_store
from tusd_py.stores.file import FileStore

KIB = 1024
BODY = 512 * KIB


async def upload_once(store: FileStore, upload_id: str) -> None:
    info = UploadInfo(id=upload_id, length=BODY)
    await store.create(info)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(BODY // (64 * KIB)):
            yield b"x" * (64 * KIB)

    async def commit(offset: int) -> None:
        pass

    assert await store.write(info, chunks(), commit) == BODY


async def test_writes_leave_the_loop_after_a_slow_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(file_store, "WRITE_SIZE", 128 * KIB)
    real_write_all = file_store._write_all
    threads: list[bool] = []  # per write: ran on the loop's thread
    slow = {"next": False}

    def write_all(f: object, pieces: list[bytes]) -> None:
        threads.append(threading.current_thread() is threading.main_thread())
        if slow["next"]:
            slow["next"] = False
            time.sleep(file_store.SLOW_DISK * 2)  # a throttled or failing disk
        real_write_all(f, pieces)  # type: ignore[arg-type]

    monkeypatch.setattr(file_store, "_write_all", write_all)
    store = FileStore(tmp_path)
    await store.open()

    await upload_once(store, "fast")
    assert threads and all(threads), "a fast disk is written on the loop"

    threads.clear()
    slow["next"] = True
    await upload_once(store, "slow")
    assert threads[0] and not any(threads[1:]), "after the slow write, threads take over"
    assert "blocked for" in caplog.text

    threads.clear()
    await upload_once(store, "still-threaded")
    assert threads and not any(threads)

    store._threaded_until = 0.0  # THREADED_FOR later
    threads.clear()
    await upload_once(store, "back")
    assert threads and all(threads)
    for name in ("fast", "slow", "still-threaded", "back"):
        assert (tmp_path / name).stat().st_size == BODY
