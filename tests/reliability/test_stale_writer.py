"""A writer that lost its lock must leave the stored bytes alone.

A PATCH whose instance froze past the lease (or whose Redis lost the lock) wakes up still holding
a file handle. Meanwhile another instance took the lock and appended and committed more bytes to
the same file. When the stale writer's commit is refused, it must not cut the file back to the
offset it knew: that would leave the new holder's committed offset pointing past the bytes
stored, and the next PATCH would fill the gap with zeros.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.reliability.backends import MiB, payload
from tusd_py.errors import TusError, lock_lost
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
