"""Where the file store's data writes run: on the event loop while the disk is fast, in worker
threads for a while after one blocked."""

from __future__ import annotations

import subprocess
import sys
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


BUSY_CPU_SCENARIO = """
import asyncio, sys, time
from pathlib import Path
from tests.unit import test_file_store_placement as t
from tusd_py.stores import file as file_store
from tusd_py.stores.file import FileStore

file_store.WRITE_SIZE = 128 * t.KIB
real_write_all = file_store._write_all

def busy_write_all(f, pieces):
    deadline = time.monotonic() + file_store.LONG_STALL * 1.5
    while time.monotonic() < deadline:
        pass
    real_write_all(f, pieces)

file_store._write_all = busy_write_all

async def main():
    store = FileStore(Path(sys.argv[1]))
    await store.open()
    await t.upload_once(store, "busy")
    await t.upload_once(store, "after")
    print(store._on_loop(), (Path(sys.argv[1]) / "after").stat().st_size == t.BODY)

asyncio.run(main())
"""


def test_a_call_slowed_by_a_busy_cpu_is_no_stall(tmp_path: Path) -> None:
    """Only time asleep in the kernel is a disk stall: a write that took long because the
    thread waited for a core (here: computed for that long) leaves writes on the loop.

    In a process of its own: a thread of another test still alive in this one and wanting the
    GIL makes the computing thread sleep for it too, which the store rightly cannot tell from a
    disk stall (seen once in a full suite)."""
    done = subprocess.run(
        [sys.executable, "-c", BUSY_CPU_SCENARIO, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"], done.stdout + done.stderr
