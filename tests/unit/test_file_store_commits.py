"""The file store's commits while a body streams: in order, behind the bytes, not in its way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tusd_py.errors import TusError, lock_lost
from tusd_py.info import UploadInfo
from tusd_py.stores import file as file_store
from tusd_py.stores.file import FileStore

KIB = 1024
CHUNK = 64 * KIB
CHUNKS = 64  # 4 MiB


@pytest.fixture
def small_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_store, "WRITE_SIZE", 256 * KIB)
    monkeypatch.setattr(file_store, "COMMIT_SIZE", 512 * KIB)


async def new_upload(tmp_path: Path, length: int = CHUNK * CHUNKS) -> tuple[FileStore, UploadInfo]:
    store = FileStore(tmp_path)
    await store.open()
    info = UploadInfo(id="upload", length=length)
    await store.create(info)
    return store, info


@pytest.mark.usefixtures("small_intervals")
async def test_a_slow_commit_does_not_hold_up_the_body(tmp_path: Path) -> None:
    store, info = await new_upload(tmp_path)
    received = 0
    commits: list[tuple[int, int, int]] = []  # (offset, bytes on disk, chunks received meanwhile)

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal received
        for _ in range(CHUNKS):
            yield b"x" * CHUNK
            received += 1
            await asyncio.sleep(0.002)

    async def commit(offset: int) -> None:
        on_disk = (tmp_path / info.id).stat().st_size
        before = received
        await asyncio.sleep(0.03)  # a slow Redis or disk
        commits.append((offset, on_disk, received - before))

    end = await store.write(info, chunks(), commit)
    assert end == CHUNK * CHUNKS
    offsets = [offset for offset, _, _ in commits]
    # The last bytes' commit is the caller's (stores/base.py, `write`).
    assert offsets == sorted(set(offsets)) and offsets[-1] < end
    assert all(offset <= on_disk for offset, on_disk, _ in commits), "committed before written"
    # The body kept flowing while the periodic commits ran.
    assert any(meanwhile > 0 for _, _, meanwhile in commits)


@pytest.mark.usefixtures("small_intervals")
async def test_a_failed_commit_ends_the_write_and_keeps_the_bytes(tmp_path: Path) -> None:
    store, info = await new_upload(tmp_path)
    attempts = 0

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(CHUNKS):
            yield b"x" * CHUNK
            await asyncio.sleep(0)

    async def commit(offset: int) -> None:
        nonlocal attempts
        attempts += 1
        raise lock_lost(info.id)

    with pytest.raises(TusError) as failure:
        await store.write(info, chunks(), commit)
    assert failure.value.code == "lock-lost"
    assert attempts == 1
    # Not cut back: another holder may have committed them (a hole is worse than extra bytes).
    assert (tmp_path / info.id).stat().st_size >= 512 * KIB


async def test_bytes_past_the_committed_offset_are_replaced(tmp_path: Path) -> None:
    store, info = await new_upload(tmp_path, length=8)
    (tmp_path / info.id).write_bytes(b"abcdzzzzzz")  # a crashed PATCH's uncommitted leftovers
    info.offset = 4

    async def chunks() -> AsyncIterator[bytes]:
        yield b"efgh"

    async def commit(offset: int) -> None:
        pass

    assert await store.write(info, chunks(), commit) == 8
    assert (tmp_path / info.id).read_bytes() == b"abcdefgh"
