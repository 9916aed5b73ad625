"""locking/file.py: upload locks between real processes of one host (`--workers` without Redis).

The other process is a small Python program holding a lock through its own `FileLocker`; it
prints what happens to it, so the tests see whether it was asked to let go.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tusd_py.errors import TusError
from tusd_py.locking.file import FileLocker

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from tusd_py.locking.file import FileLocker

    async def main(directory, upload_id, obey):
        locker = FileLocker(directory, acquire_timeout=5)
        asked = asyncio.Event()
        def on_release_request():
            print("asked", flush=True)
            asked.set()
        lock = await locker.acquire(upload_id, on_release_request)
        print("held", lock.token, flush=True)
        if obey:
            await asked.wait()
            await lock.release()
            print("released", flush=True)
        await asyncio.sleep(30)

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "obey"))
    """
)


class Holder:
    def __init__(self, directory: Path, upload_id: str, obey: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(directory), upload_id, "obey" if obey else "no"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["held"], line
        self.token = line[1]

    def next_line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


def hold(tmp_path: Path, holders: list[Holder], obey: bool = True) -> Holder:
    holder = Holder(tmp_path, "u1", obey)
    holders.append(holder)
    return holder


async def test_a_lock_held_by_another_process_is_handed_over(
    tmp_path: Path, holders: list[Holder]
) -> None:
    other = hold(tmp_path, holders)
    locker = FileLocker(tmp_path, acquire_timeout=10)
    start = time.monotonic()
    lock = await locker.acquire("u1", lambda: None)
    assert time.monotonic() - start < 5
    assert other.next_line() == "asked"
    assert other.next_line() == "released"
    assert (tmp_path / "u1").read_text().split() == [str(os.getpid()), lock.token]
    await lock.release()
    assert not (tmp_path / "u1").exists()
    await locker.close()


async def test_a_holder_that_does_not_let_go_means_423(
    tmp_path: Path, holders: list[Holder]
) -> None:
    other = hold(tmp_path, holders, obey=False)
    locker = FileLocker(tmp_path, acquire_timeout=0.5)
    with pytest.raises(TusError) as caught:
        await locker.acquire("u1", lambda: None)
    assert caught.value.status == 423
    assert other.next_line() == "asked"  # it was asked, and kept the lock
    await locker.close()


async def test_a_killed_holder_leaves_the_upload_free(
    tmp_path: Path, holders: list[Holder]
) -> None:
    other = hold(tmp_path, holders, obey=False)
    os.kill(other.proc.pid, signal.SIGKILL)
    other.proc.wait(10)
    locker = FileLocker(tmp_path, acquire_timeout=0.5)
    assert await locker.holder("u1") is None
    lock = await locker.acquire("u1", lambda: None)
    await lock.release()
    await locker.close()


async def test_a_reader_learns_the_other_process_holder_and_waits_for_it(
    tmp_path: Path, holders: list[Holder]
) -> None:
    other = hold(tmp_path, holders)
    locker = FileLocker(tmp_path, acquire_timeout=10)
    assert await locker.holder("u1") == other.token
    await locker.let_go("u1", other.token)
    assert other.next_line() == "asked"
    assert await locker.holder("u1") is None
    await locker.close()


async def test_within_one_process_the_holder_is_asked_in_memory(tmp_path: Path) -> None:
    locker = FileLocker(tmp_path, acquire_timeout=5)
    asked = asyncio.Event()
    first = await locker.acquire("u1", asked.set)

    async def release_when_asked() -> None:
        await asked.wait()
        await first.release()

    releasing = asyncio.create_task(release_when_asked())
    second = await locker.acquire("u1", lambda: None)
    await releasing
    assert asked.is_set() and not first.valid and second.valid
    assert await locker.holder("u1") == second.token
    await second.release()
    assert await locker.holder("u1") is None
    await locker.close()


async def test_a_removed_lock_directory_is_made_again(tmp_path: Path) -> None:
    """benchmarks/run empties the upload directory between cases, `.locks` with it, while the
    workers run: the next PATCH answered 500 (FileNotFoundError) until the lock dir came back."""
    locker = FileLocker(tmp_path / ".locks", acquire_timeout=1)
    lock = await locker.acquire("a" * 32, lambda: None)
    await lock.release()
    (tmp_path / ".locks").rmdir()
    lock = await locker.acquire("a" * 32, lambda: None)
    assert lock.valid and (tmp_path / ".locks" / ("a" * 32)).exists()
    await lock.release()
