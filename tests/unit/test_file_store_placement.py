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


def recording_writes(monkeypatch: pytest.MonkeyPatch) -> tuple[list[bool], list[float]]:
    """Record, per data write, whether it ran on the loop's thread; sleep as `delays` says."""
    monkeypatch.setattr(file_store, "WRITE_SIZE", 128 * KIB)
    real_write_all = file_store._write_all
    threads: list[bool] = []
    delays: list[float] = []  # seconds the next writes block, one per write

    def write_all(f: object, pieces: list[bytes]) -> None:
        threads.append(threading.current_thread() is threading.main_thread())
        if delays:
            time.sleep(delays.pop(0))  # a throttled or failing disk
        real_write_all(f, pieces)  # type: ignore[arg-type]

    monkeypatch.setattr(file_store, "_write_all", write_all)
    return threads, delays


async def test_a_long_stall_moves_writes_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    threads, delays = recording_writes(monkeypatch)
    store = FileStore(tmp_path)
    await store.open()

    await upload_once(store, "fast")
    assert threads and all(threads), "a fast disk is written on the loop"

    threads.clear()
    delays.append(file_store.LONG_STALL * 1.5)
    await upload_once(store, "slow")
    assert threads[0] and not any(threads[1:]), "after the long stall, threads take over"
    assert "write_all blocked for" in caplog.text

    threads.clear()
    await upload_once(store, "still-threaded")
    assert threads and not any(threads)

    store._threaded_until = 0.0  # THREADED_FOR later
    threads.clear()
    await upload_once(store, "back")
    assert threads and all(threads)
    for name in ("fast", "slow", "still-threaded", "back"):
        assert (tmp_path / name).stat().st_size == BODY


async def test_short_stalls_move_writes_only_when_they_repeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads, delays = recording_writes(monkeypatch)
    store = FileStore(tmp_path)
    await store.open()
    short = file_store.STALL * 1.5

    delays.append(short)  # a lone hiccup (an .info rename while memory is reclaimed)
    await upload_once(store, "hiccup")
    assert threads and all(threads), "one short stall is tolerated"

    threads.clear()
    delays.extend([0.0, short, 0.0, short])  # two more within the window: the third switches
    await upload_once(store, "stalling")
    assert threads[:4] == [True] * 4 and not any(threads[5:])
    assert (tmp_path / "stalling").stat().st_size == BODY


async def test_a_call_slowed_by_a_busy_cpu_is_no_stall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only time asleep in the kernel is a disk stall: a write that took long because the
    thread waited for a core (here: computed for that long) leaves writes on the loop.

    A thread of another test still alive in this process and wanting the GIL makes the
    computing thread sleep for it too, which the store rightly cannot tell from a disk stall:
    such a try proves nothing and is made again (the busy loop counts its own sleeps)."""
    monkeypatch.setattr(file_store, "WRITE_SIZE", 128 * KIB)
    real_write_all = file_store._write_all
    slept_while_busy = False

    def busy_write_all(f: object, pieces: list[bytes]) -> None:
        nonlocal slept_while_busy
        before = file_store._voluntary_switches()
        deadline = time.monotonic() + file_store.LONG_STALL * 1.5
        while time.monotonic() < deadline:
            pass
        slept_while_busy |= file_store._voluntary_switches() != before
        real_write_all(f, pieces)  # type: ignore[arg-type]

    monkeypatch.setattr(file_store, "_write_all", busy_write_all)
    for attempt in range(5):
        slept_while_busy = False
        directory = tmp_path / str(attempt)
        store = FileStore(directory)
        await store.open()
        await upload_once(store, "busy")
        await upload_once(store, "after")
        if slept_while_busy:
            continue
        assert store._on_loop()
        assert (directory / "after").stat().st_size == BODY
        return
    pytest.skip("every try's busy thread also slept (another thread wanted the GIL)")
