"""Local state's commits: a `.progress` rewritten in place, the `.info` whole again at the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    offset, expires, checksum = progress_file.read_text().split()
    assert (offset, expires) == ("60", "1900000000.25") and len(checksum) == 8
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


async def test_a_progress_mixed_from_two_commits_is_read_again_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a read may see while another process rewrites the `.progress` in place: bytes of
    the old text and of the new, each parsing as a number (offsets 4194304, 8388608 -> 8398608,
    past what was ever committed)."""
    _, state, info = await new_upload(tmp_path, length=10**8)
    await commit(state, info, 4194304)
    old = (tmp_path / "upload.progress").read_bytes()
    await commit(state, info, 8388608)
    new = (tmp_path / "upload.progress").read_bytes()
    mixed = bytes(max(a, b) for a, b in zip(old, new, strict=True))
    assert mixed.split()[0] == b"8398608"
    (tmp_path / "upload.progress").write_bytes(mixed)
    loaded = await FileStore(tmp_path).load_info(info.id)
    assert loaded is not None and loaded.offset == 0  # torn for good: the `.info`'s, older but true

    # Torn only while the rewrite lasts: the read is made again and sees it whole.
    (tmp_path / "upload.progress").write_bytes(new)
    reads = iter([mixed.decode(), new.decode()])
    real = Path.read_text

    def read_text(path: Path) -> str:
        return next(reads) if path.name == "upload.progress" else real(path)

    monkeypatch.setattr(Path, "read_text", read_text)
    loaded = await FileStore(tmp_path).load_info(info.id)
    assert loaded is not None and loaded.offset == 8388608


async def test_a_progress_written_before_its_checksum_is_still_read(tmp_path: Path) -> None:
    _, state, info = await new_upload(tmp_path)
    await commit(state, info, 30)
    (tmp_path / "upload.progress").write_text("40 1900000000.5".ljust(63) + "\n")
    loaded = await FileStore(tmp_path).load_info(info.id)
    assert loaded is not None and (loaded.offset, loaded.expires_at) == (40, 1_900_000_000.5)


async def test_terminate_removes_the_progress(tmp_path: Path) -> None:
    store, state, info = await new_upload(tmp_path)
    await commit(state, info, 30)
    await store.terminate(info)
    assert [name for name in os.listdir(tmp_path) if name != ".index"] == []
    assert await store.load_info(info.id) is None


# -- another process reads while one writes (--workers with local state) ------------------------

STEP = 7919  # offset = STEP * n, expires_at = EPOCH + n: a read mixing two writes shows
EPOCH = 1_900_000_000.0


def _commit_forever(directory: str, upload_id: str, commits: int) -> None:
    """A worker committing an upload: `.progress` in place, and every 10th commit the `.info`
    whole again (as a declared length or the finish does), which removes the `.progress`."""
    import asyncio

    async def run() -> None:
        store = FileStore(Path(directory))
        info = await store.load_info(upload_id)
        assert info is not None
        for n in range(1, commits + 1):
            info.offset, info.expires_at = STEP * n, EPOCH + n
            if n % 10:
                await store.save_progress(info)
            else:
                await store.save_info(info)

    asyncio.run(run())


async def test_reads_in_another_process_never_see_a_mixed_or_older_commit(tmp_path: Path) -> None:
    import multiprocessing

    store, _, info = await new_upload(tmp_path, length=STEP * 10**6)
    writer = multiprocessing.get_context("spawn").Process(
        target=_commit_forever, args=(str(tmp_path), info.id, 10_000)
    )
    writer.start()
    try:
        seen, reads = 0, 0
        while writer.is_alive() or reads == 0:
            loaded = await store.load_info(info.id)
            assert loaded is not None
            reads += 1
            n = loaded.offset // STEP
            assert loaded.offset == STEP * n, loaded.offset
            assert loaded.expires_at == (EPOCH + n if n else None), (n, loaded.expires_at)
            assert loaded.offset >= seen, f"read {reads}: offset {loaded.offset} after {seen}"
            seen = loaded.offset
    finally:
        writer.kill()
        writer.join()
    assert writer.exitcode in (0, -9)
