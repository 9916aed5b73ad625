"""The file store's write coalescing: bounded across all PATCHes, not only per PATCH."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tusd_py.info import UploadInfo
from tusd_py.stores import file as file_store
from tusd_py.stores.file import FileStore

KIB = 1024
UPLOADS = 20
CHUNK = 64 * KIB
CHUNKS = 32  # 2 MiB per upload, 40 MiB in all


async def test_many_patches_share_the_coalescing_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_store, "COALESCE_BUDGET", 1024 * KIB)
    store = FileStore(tmp_path)
    await store.open()
    peak = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal peak
        for _ in range(CHUNKS):
            yield b"x" * CHUNK
            peak = max(peak, store._buffered)
            await asyncio.sleep(0)  # let every upload take its turn, as concurrent PATCHes do

    async def commit(offset: int) -> None:
        pass

    infos = [UploadInfo(id=f"upload{i}", length=CHUNK * CHUNKS) for i in range(UPLOADS)]
    for info in infos:
        await store.create(info)
    ends = await asyncio.gather(*(store.write(info, chunks(), commit) for info in infos))
    assert ends == [CHUNK * CHUNKS] * UPLOADS
    assert all((tmp_path / info.id).stat().st_size == CHUNK * CHUNKS for info in infos)
    # Without the budget every upload would gather 1 MiB: 20 MiB at once.
    assert peak <= 1024 * KIB + UPLOADS * CHUNK
    assert store._buffered == 0
