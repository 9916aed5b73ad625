"""A writer whose commit failed must leave the stored bytes alone, and no writer may fill a gap.

A PATCH whose instance froze past the lease (or whose Redis lost the lock) wakes up still holding
a file handle; meanwhile another instance took over and committed more bytes to the same file.
And a commit that timed out at the server may still be run by Redis once it wakes up. In both
cases, cutting the file back to the offset the writer knew would leave the committed offset past
the bytes stored, and the next PATCH would have filled the gap with zeros: found by the Redis
faults scenario (a 7 s Redis pause within the default 15 s lease gave uploads that "completed"
with the wrong SHA-256).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.reliability.backends import MiB, payload
from tusd_py.errors import TusError, lock_lost, storage_unavailable
from tusd_py.info import UploadInfo
from tusd_py.stores.file import FileStore


def overwrite(path: Path, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.write(data)


async def test_a_stale_writer_does_not_truncate_what_the_new_holder_committed(
    tmp_path: Path,
) -> None:
    data = payload(3, 12 * MiB)
    store = FileStore(tmp_path)
    await store.open()
    info = UploadInfo(id="stale", length=len(data))
    await store.create(info)
    path = tmp_path / "stale"

    async def chunks() -> AsyncIterator[bytes]:
        for position in range(0, 8 * MiB, 256 * 1024):
            yield data[position : position + 256 * 1024]

    new_holder_committed = 0

    async def commit(offset: int) -> None:
        nonlocal new_holder_committed
        # While this writer was frozen, another instance took over: it resumed from this
        # writer's bytes and committed 10 MiB. Then this writer's own commit is refused.
        overwrite(path, data[: 10 * MiB])
        new_holder_committed = 10 * MiB
        raise lock_lost(info.id)

    with pytest.raises(TusError) as raised:
        await store.write(info, chunks(), commit)
    assert raised.value.code == "lock-lost"
    assert new_holder_committed == 10 * MiB
    stored = path.read_bytes()
    assert len(stored) >= new_holder_committed, "the stale writer truncated committed bytes"
    assert stored[:new_holder_committed] == data[:new_holder_committed]


async def test_a_commit_that_timed_out_does_not_truncate(tmp_path: Path) -> None:
    """Redis may run a commit after the server gave up waiting for it: the bytes must stay."""
    data = payload(4, 8 * MiB)
    store = FileStore(tmp_path)
    await store.open()
    info = UploadInfo(id="late", length=len(data))
    await store.create(info)
    applied_later: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for position in range(0, len(data), 256 * 1024):
            yield data[position : position + 256 * 1024]

    async def commit(offset: int) -> None:
        applied_later.append(offset)  # Redis runs it once it wakes up...
        raise storage_unavailable("Redis is unreachable: Timeout reading from socket")

    with pytest.raises(TusError) as raised:
        await store.write(info, chunks(), commit)
    assert raised.value.status == 503
    stored = (tmp_path / "late").read_bytes()
    assert applied_later and len(stored) >= applied_later[-1]
    assert stored[: applied_later[-1]] == data[: applied_later[-1]]


async def test_a_committed_offset_past_the_stored_bytes_is_refused_not_zero_filled(
    tmp_path: Path,
) -> None:
    store = FileStore(tmp_path)
    await store.open()
    info = UploadInfo(id="short", length=100)
    await store.create(info)
    info.offset = 40  # committed, but the file holds nothing

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x" * 10

    async def commit(offset: int) -> None:
        raise AssertionError("nothing may be committed")

    with pytest.raises(TusError) as raised:
        await store.write(info, chunks(), commit)
    assert (raised.value.status, raised.value.code) == (500, "storage-inconsistent")
    assert (tmp_path / "short").read_bytes() == b""
