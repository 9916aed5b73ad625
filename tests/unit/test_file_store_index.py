"""The file store's index (.index/): what the sweep lists instead of reading every `.info`."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tusd_py.info import UploadInfo
from tusd_py.stores.file import FileStore
from tusd_py.stores.file_index import GROUP

NS = 1_000_000_000
T0 = 1_900_000_040  # 20 s into a group (of 60 s)


async def opened(directory: Path) -> FileStore:
    store = FileStore(directory)
    await store.open()
    return store


async def stored(store: FileStore, upload_id: str, length: int, offset: int) -> UploadInfo:
    info = UploadInfo(id=upload_id, length=length)
    await store.create(info)
    (store.directory / upload_id).write_bytes(b"x" * offset)
    info.offset = offset
    await store.save_info(info)
    return info


async def finish_at(
    store: FileStore, info: UploadInfo, when: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: int(when * NS))
    await store.finish(info)
    monkeypatch.undo()


async def unfinished(store: FileStore) -> list[str]:
    return [upload_id async for upload_id in store.list_unfinished_ids()]


async def finished_before(store: FileStore, cutoff: float) -> list[str]:
    return sorted([upload_id async for upload_id in store.list_finished_before(cutoff)])


def entries(directory: Path) -> list[str]:
    index = directory / ".index"
    return sorted(str(p.relative_to(index)) for p in index.rglob("*") if p.is_file())


async def test_an_upload_is_unfinished_from_creation_until_it_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(tmp_path)
    info = await stored(store, "a", 3, 3)
    empty = await stored(store, "e", 0, 0)
    assert await unfinished(store) == ["a", "e"]
    await finish_at(store, info, T0, monkeypatch)
    await finish_at(store, empty, T0 + 1, monkeypatch)
    await store.finish(info)  # again (a retry): changes nothing
    assert await unfinished(store) == []
    group = T0 // GROUP * GROUP
    assert entries(tmp_path) == ["built", f"finished/{group}/a", f"finished/{group}/e"]
    assert (tmp_path / "a").stat().st_mtime == T0
    assert await store.finished_at("a") == T0
    await store.terminate(info)
    await store.terminate(empty)
    assert entries(tmp_path) == ["built"]
    assert await store.finished_at("a") is None


async def test_the_cutoff_minute_is_sorted_by_finishing_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(tmp_path)
    group = T0 // GROUP * GROUP
    for name, when in [("old", group - 30), ("early", group + 10), ("late", group + 50)]:
        await finish_at(store, await stored(store, name, 1, 1), when, monkeypatch)
    assert await finished_before(store, group) == ["old"]
    assert await finished_before(store, group + 30) == ["early", "old"]
    assert await finished_before(store, group + GROUP + 1) == ["early", "late", "old"]


async def test_entries_of_vanished_uploads_and_empty_minutes_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(tmp_path)
    info = await stored(store, "gone", 1, 1)
    await finish_at(store, info, T0, monkeypatch)
    (tmp_path / "gone.info").unlink()  # a crash inside terminate
    assert await finished_before(store, T0 + GROUP) == []
    assert await finished_before(store, T0 + GROUP) == []
    assert entries(tmp_path) == ["built"]
    assert os.listdir(tmp_path / ".index" / "finished") == []
    await stored(store, "left", 10, 0)
    (tmp_path / "left").unlink()
    (tmp_path / "left.info").unlink()
    await store.forget_unfinished("left")  # the sweep found it gone
    assert await unfinished(store) == []


async def test_a_directory_from_before_the_index_is_indexed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(tmp_path)
    await stored(store, "going", 10, 4)
    await finish_at(store, await stored(store, "done", 2, 2), T0, monkeypatch)
    shutil.rmtree(tmp_path / ".index")  # as an older version left the directory
    os.utime(tmp_path / "done", (T0, T0))

    store = await opened(tmp_path)
    assert await unfinished(store) == ["going"]
    assert await finished_before(store, T0 + 1) == ["done"]
    group = T0 // GROUP * GROUP
    assert entries(tmp_path) == ["built", f"finished/{group}/done", "unfinished/going"]
    read: list[str] = []

    def walk() -> Iterator[tuple[str, UploadInfo | None]]:
        read.append("walk")
        return iter(())

    monkeypatch.setattr(store, "_stored_infos", walk)
    assert await unfinished(store) == ["going"]
    assert read == []  # built: never walked again


async def test_an_id_taken_by_an_existing_upload_leaves_its_entry_alone(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    info = await stored(store, "a", 1, 1)
    await store.finish(info)
    with pytest.raises(Exception, match="exists"):
        await store.create(UploadInfo(id="a", length=5))
    assert await unfinished(store) == []
