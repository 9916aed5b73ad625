"""What the contract cases share: payloads, chunk sources, a commit recorder, whole uploads."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tests.support.payloads import chunked
from tusd_py.ids import new_upload_id
from tusd_py.info import ConcatKind, UploadInfo
from tusd_py.stores.base import DataStore, Reader

CHUNK = 64 * 1024


def new_info(length: int | None, concat: ConcatKind | None = None) -> UploadInfo:
    return UploadInfo(
        id=new_upload_id(),
        length=length,
        metadata={"filename": "a.bin"},
        metadata_header="filename YS5iaW4=",
        concat=concat,
    )


def chunks(data: bytes, size: int = CHUNK) -> AsyncIterator[bytes]:
    return chunked(data, size)


async def failing_after(data: bytes, exc: BaseException) -> AsyncIterator[bytes]:
    async for chunk in chunks(data):
        yield chunk
    raise exc


class Commits:
    """Stands in for the state store: records commits and moves `info.offset`, as it does.

    Each commit is checked against `witness` (another store over the same medium): a commit may
    never cover bytes that storage does not hold.
    """

    def __init__(self, info: UploadInfo, witness: DataStore, fail_at: int | None = None) -> None:
        self.info = info
        self.witness = witness
        self.fail_at = fail_at  # the number of the commit that raises (1 = the first)
        self.offsets: list[int] = []
        self.calls = 0

    async def __call__(self, offset: int) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise CommitFailed(offset)
        assert offset > self.info.offset, f"commit {offset} does not move past {self.info.offset}"
        durable = await self.witness.stored_offset(self.info)
        assert offset <= durable, f"commit {offset} is past the {durable} bytes stored"
        self.offsets.append(offset)
        self.info.offset = offset


class CommitFailed(Exception):
    """What a commit raises when the lock was lost."""


async def write(store: DataStore, info: UploadInfo, data: bytes) -> Commits:
    """One write of `data` at `info.offset`, and the caller's commit of what the store left."""
    commits = Commits(info, store)
    start = info.offset
    end = await write_and_commit(store, info, chunks(data), commits)
    assert end == start + len(data)
    assert commits.offsets[-1:] == ([end] if data else [])
    return commits


async def write_and_commit(
    store: DataStore, info: UploadInfo, source: AsyncIterator[bytes], commits: Commits
) -> int:
    """`store.write`, then the commit a caller makes of what the store left uncommitted (the
    offset returned is durable: the commit's check against the witness holds it to that)."""
    end = await store.write(info, source, commits)
    assert end >= info.offset, f"write returned {end}, below the committed {info.offset}"
    if end > info.offset:
        await commits(end)
    return end


async def uploaded(store: DataStore, data: bytes, concat: ConcatKind | None = None) -> UploadInfo:
    """A finished upload of `data`."""
    info = new_info(len(data), concat)
    await store.create(info)
    await write(store, info, data)
    await store.finish(info)
    return info


async def read(store: DataStore, info: UploadInfo, start: int, end: int) -> list[bytes]:
    assert isinstance(store, Reader)
    return [chunk async for chunk in store.read(info, start, end)]


async def stored_bytes(store: DataStore, info: UploadInfo) -> bytes:
    return b"".join(await read(store, info, 0, info.length or 0))
