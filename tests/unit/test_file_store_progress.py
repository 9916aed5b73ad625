"""Local state's commits: a `.progress` rewritten in place, the `.info` whole again at the end."""

from __future__ import annotations

import os
from pathlib import Path

from tusd_py.info import UploadInfo
from tusd_py.locking.memory import MemoryLocker
from tusd_py.state.local import LocalState
from tusd_py.stores.file import FileStore


async def new_upload(tmp_path: Path, length: int = 100) -> tuple[FileStore, LocalState, UploadInfo]:
    store = FileStore(tmp_path)
    await store.open()
    state = LocalState(store)
    info = UploadInfo(id="upload", length=length, metadata={"name": "a.bin"})
    await store.create(info)
    await state.create(info)
    return store, state, info


async def commit(state: LocalState, info: UploadInfo, offset: int) -> None:
    lock = await MemoryLocker().acquire(info.id, lambda: None)
    try:
        await state.commit(info, offset, lock)
    finally:
        await lock.release()


async def test_a_commit_rewrites_the_progress_in_place_and_leaves_the_info(tmp_path: Path) -> None:
    _, state, info = await new_upload(tmp_path)
    info_file, progress_file = tmp_path / "upload.info", tmp_path / "upload.progress"
    info_before = (info_file.stat().st_ino, info_file.read_text())
    info.expires_at = 1_900_000_000.25
    await commit(state, info, 40)
    inode = progress_file.stat().st_ino
    await commit(state, info, 60)
    # No rename: the same `.info` with the same text, the same `.progress` inode.
    assert (info_file.stat().st_ino, info_file.read_text()) == info_before
    assert progress_file.stat().st_ino == inode
    assert progress_file.read_text().split() == ["60", "1900000000.25"]
    # A restarted process (a fresh store) sees the committed offset and expiry.
    loaded = await FileStore(tmp_path).load_info(info.id)
    assert loaded is not None
    assert (loaded.offset, loaded.expires_at) == (60, 1_900_000_000.25)
    assert loaded.metadata == {"name": "a.bin"}


async def test_completing_writes_the_whole_info_and_drops_the_progress(tmp_path: Path) -> None:
    _, state, info = await new_upload(tmp_path)
    await commit(state, info, 40)
    await commit(state, info, 100)
    # The last commit is a `.progress` write like the others (one `.info` replacement per
    # upload, by the completion), and already durable on its own.
    assert UploadInfo.from_json((tmp_path / "upload.info").read_text()).offset == 0
    loaded = await FileStore(tmp_path).load_info(info.id)
    assert loaded is not None and loaded.finished and not loaded.completed
    info.completed = True  # what uploads.complete_upload records next
    await state.update(info, None)
    assert not (tmp_path / "upload.progress").exists()
    written = UploadInfo.from_json((tmp_path / "upload.info").read_text())
    assert written.offset == 100 and written.completed


async def test_an_unreadable_or_older_progress_loses_to_the_info(tmp_path: Path) -> None:
    _, state, info = await new_upload(tmp_path)
    await commit(state, info, 30)
    info.length = 200
    await state.update(info, None)  # a declared length: the `.info` (offset 30) is rewritten
    progress = tmp_path / "upload.progress"
    for text in ("", "garbage", "12x -", "20 -"):  # torn, or older than the `.info`
        progress.write_text(text)
        loaded = await FileStore(tmp_path).load_info(info.id)
        assert loaded is not None and (loaded.offset, loaded.length) == (30, 200), text


async def test_terminate_removes_the_progress(tmp_path: Path) -> None:
    store, state, info = await new_upload(tmp_path)
    await commit(state, info, 30)
    await store.terminate(info)
    assert [name for name in os.listdir(tmp_path) if name != ".index"] == []
    assert await store.load_info(info.id) is None
