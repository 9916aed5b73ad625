"""In-memory store: the reference implementation of the store interface.

Layout, in `MemoryStore.uploads` (a plain dict), per upload id:
    MemoryUpload.info   the `.info` copy: the upload's info as JSON
    MemoryUpload.data   the bytes received so far
    MemoryUpload.finished_at
                        when `finish` ran (None until then): what the sweep lists by
    MemoryUpload.written_at
                        when its bytes last changed (its creation, a write, a concatenation)

A byte is durable as soon as it is appended, so `write` commits after every chunk. Stores built
on the same `uploads` dict share their uploads, as two processes share one upload directory.

Caveats: everything is lost when the process ends, and every byte is held in memory. It is not in
the CLI's store table; it is for embedding and fast tests (the store contract suite and the
protocol suite run on it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tusd_py.errors import TusError, upload_exists
from tusd_py.info import UploadInfo
from tusd_py.stores.base import Commit, DataStore

if TYPE_CHECKING:
    from tusd_py.config import Config

READ_SIZE = 256 * 1024


@dataclass
class MemoryUpload:
    info: str
    data: bytearray = field(default_factory=bytearray)
    finished_at: float | None = None
    written_at: float = field(default_factory=time.time)


def _missing(upload_id: str) -> TusError:
    return TusError(404, "upload-not-found", f"the data of {upload_id!r} is gone")


class MemoryStore(DataStore):
    storage_type = "memorystore"

    def __init__(self, uploads: dict[str, MemoryUpload] | None = None) -> None:
        self.uploads: dict[str, MemoryUpload] = {} if uploads is None else uploads

    @classmethod
    def from_config(cls, config: Config) -> MemoryStore:
        return cls()

    def describe(self, info: UploadInfo) -> dict[str, str]:
        return {"Type": self.storage_type}

    def _upload(self, upload_id: str) -> MemoryUpload:
        upload = self.uploads.get(upload_id)
        if upload is None:
            raise _missing(upload_id)
        return upload

    async def create(self, info: UploadInfo) -> None:
        if info.id in self.uploads:
            raise upload_exists(info.id)
        info.storage = {"type": "memory"}
        self.uploads[info.id] = MemoryUpload(info.to_json())

    async def save_info(self, info: UploadInfo) -> None:
        self._upload(info.id).info = info.to_json()

    async def load_info(self, upload_id: str) -> UploadInfo | None:
        upload = self.uploads.get(upload_id)
        return None if upload is None else UploadInfo.from_json(upload.info)

    async def stored_offset(self, info: UploadInfo) -> int:
        upload = self.uploads.get(info.id)
        size = 0 if upload is None else len(upload.data)
        return size if info.length is None else min(size, info.length)

    async def last_write(self, info: UploadInfo) -> float | None:
        upload = self.uploads.get(info.id)
        return None if upload is None else upload.written_at

    async def declare_length(self, info: UploadInfo) -> None:
        """Any length fits in memory (as far as this store is concerned)."""

    async def write(self, info: UploadInfo, chunks: AsyncIterable[bytes], commit: Commit) -> int:
        upload = self._upload(info.id)
        data, start = upload.data, info.offset
        if len(data) < start:
            raise TusError(
                500,
                "storage-inconsistent",
                f"upload {info.id!r} is committed up to byte {start} but only {len(data)} bytes "
                "are stored; refusing to fill the gap",
            )
        del data[start:]  # leftovers of a failed write past the committed offset
        commit_failed = False
        try:
            async for chunk in chunks:
                data += chunk
                upload.written_at = time.time()
                try:
                    await commit(len(data))
                except BaseException:
                    commit_failed = True
                    raise
        except BaseException:
            # Back to what is committed: `info.offset` follows successful commits (a checksum
            # guard holds them back). Not when a commit failed: it may have been applied after
            # all, and bytes past the committed offset are harmless where a hole is not.
            if not commit_failed:
                del data[max(start, info.offset) :]
            raise
        return len(data)

    async def concatenate(self, final: UploadInfo, partials: list[UploadInfo]) -> None:
        joined = bytearray()
        for partial in partials:
            length, data = partial.length or 0, self._upload(partial.id).data
            if len(data) < length:
                raise TusError(
                    500, "storage-inconsistent", f"partial {partial.id!r} is shorter than {length}"
                )
            joined += data[:length]
        upload = self._upload(final.id)
        upload.data = joined  # replaced whole: a retry starts over
        upload.written_at = time.time()

    async def finish(self, info: UploadInfo) -> None:
        upload = self._upload(info.id)
        if upload.finished_at is None:
            upload.finished_at = time.time()

    async def terminate(self, info: UploadInfo) -> None:
        self.uploads.pop(info.id, None)

    async def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        data = self._upload(info.id).data
        for position in range(start, min(end, len(data)), READ_SIZE):
            yield bytes(data[position : min(end, position + READ_SIZE)])

    async def list_upload_ids(self) -> AsyncIterator[str]:
        for upload_id in list(self.uploads):
            yield upload_id

    async def list_unfinished_ids(self) -> AsyncIterator[str]:
        for upload_id, upload in list(self.uploads.items()):
            if upload.finished_at is None:
                yield upload_id

    async def forget_unfinished(self, upload_id: str) -> None:
        """Nothing to forget: the listing is the uploads themselves."""

    async def list_finished_before(self, cutoff: float) -> AsyncIterator[str]:
        for upload_id, upload in list(self.uploads.items()):
            if upload.finished_at is not None and upload.finished_at < cutoff:
                yield upload_id

    async def finished_at(self, upload_id: str) -> float | None:
        upload = self.uploads.get(upload_id)
        return None if upload is None else upload.finished_at
