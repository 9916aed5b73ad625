"""One PATCH of an S3 upload: its body cut into parts at absolute part boundaries, uploaded
while it still arrives, and committed as far as S3 has acknowledged it contiguously."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable

from tusd_py.info import UploadInfo
from tusd_py.stores.base import Commit
from tusd_py.stores.s3.client import S3Client
from tusd_py.stores.s3.errors import inconsistent
from tusd_py.stores.s3.part_uploads import PartUploads
from tusd_py.stores.s3.parts import PartBuffer
from tusd_py.stores.s3.upload import S3Upload


class PatchWriter:
    """One PATCH: cuts the body into parts at absolute part boundaries, uploads them while the
    body is still arriving, and commits the prefix S3 has acknowledged contiguously."""

    def __init__(
        self,
        client: S3Client,
        parts: PartUploads,
        info: UploadInfo,
        upload: S3Upload,
        commit: Commit,
    ) -> None:
        self.client = client
        self.parts = parts
        self.info = info
        self.upload = upload
        self._commit = commit
        self.tails = parts.tails(upload)
        self.start = self.end = info.offset
        # First byte of the part being filled; its committed head (if any) is in segments.
        self.part_start = info.offset - info.offset % upload.part_size
        self.tail_pending = info.offset - self.part_start
        self.buffer: PartBuffer | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # The upload of the part this PATCH started in, when earlier PATCHes began it: at the end
        # of the body it may go on in the background (see _end_of_stream).
        self.first_part: tuple[asyncio.Task[None], PartBuffer] | None = None
        # That upload starts once more bytes arrive after the part filled; when the body ends
        # there instead, only after the PATCH's segment is written, so the two do not compete.
        self.first_part_gate = asyncio.Event()
        self.detached: set[int] = set()  # part starts whose upload no longer commits
        self.error: BaseException | None = None
        self.starts: dict[asyncio.Task[None], int] = {}  # part upload -> its part's first byte
        self.failed_at: int | None = None  # first byte of the earliest part whose upload failed
        self.failed = False  # once set, nothing more is committed
        self.acked: dict[int, int] = {}  # part start -> part end, acknowledged but not contiguous
        self.acked_upto = self.part_start
        self.committed = info.offset
        self.commit_lock = asyncio.Lock()

    async def run(self, chunks: AsyncIterable[bytes]) -> int:
        try:
            async for chunk in chunks:
                self._raise_if_failed()
                if chunk:
                    await self._feed(memoryview(chunk))
            await self._end_of_stream()
        except BaseException:
            await self._abandon()
            raise
        return self.end

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    async def _feed(self, data: memoryview) -> None:
        size = self.upload.part_size
        while data:
            if self.first_part is not None:
                self.first_part_gate.set()
            buffer = await self._current_buffer()
            piece = data[: size - buffer.size]
            await buffer.append(piece)
            self.end += len(piece)
            data = data[len(piece) :]
            if buffer.size == size:
                await self._submit()

    async def _current_buffer(self) -> PartBuffer:
        if self.buffer is None:
            if self.upload.multipart_id is None:
                raise inconsistent(self.upload.id, "a zero-length upload cannot take bytes")
            number = self.part_start // self.upload.part_size + 1
            # Loaded lazily: a PATCH that brings no bytes never reads `.part`.
            self.buffer = await self.parts.tail_buffer(self.upload, number, self.tail_pending)
            self.tail_pending = 0
        return self.buffer

    async def _submit(self) -> None:
        """Hand the current buffer to a part upload, once fewer than max_concurrency run."""
        while len(self.tasks) >= self.parts.max_concurrency:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            self._raise_if_failed()
        buffer, self.buffer = self.buffer, None
        assert buffer is not None
        start = self.part_start
        self.part_start += buffer.size
        task = asyncio.create_task(self._upload_part(start, buffer, gated=start < self.start))
        self.tasks.add(task)
        self.starts[task] = start
        task.add_done_callback(self._part_done)
        if start < self.start:
            self.first_part = (task, buffer)

    async def _upload_part(self, start: int, buffer: PartBuffer, gated: bool = False) -> None:
        number = start // self.upload.part_size + 1
        try:
            if gated:
                await self.first_part_gate.wait()
            await self.client.upload_part(self.upload, number, buffer)
        finally:
            buffer.release()
        if start < self.start:  # its head came from earlier PATCHes' tail
            self.parts.tail_uploaded(self.upload, number)
        async with self.commit_lock:
            if start in self.detached:
                return  # its bytes were committed through a segment
            self.acked[start] = start + buffer.size
            while self.acked_upto in self.acked:
                self.acked_upto = self.acked.pop(self.acked_upto)
            await self._commit_upto(self.acked_upto)

    async def _commit_upto(self, offset: int) -> None:
        if offset > self.committed and not self.failed:
            try:
                await self._commit(offset)
            except BaseException:
                self.failed = True
                raise
            self.committed = offset

    def _part_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        if self.error is None:
            self.error = task.exception()
        start = self.starts[task]
        self.failed_at = start if self.failed_at is None else min(self.failed_at, start)

    async def _drain(self) -> None:
        while self.tasks:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
            self._raise_if_failed()

    async def _end_of_stream(self) -> None:
        if self.end == self.start:
            return  # nothing arrived; finish() turns a pending tail into the last part if needed
        complete = self.info.length is not None and self.end == self.info.length
        if complete and self.buffer is not None:
            await self._submit()  # the last part may be short
        deferred = await self._detach_first_part(complete)
        if deferred is None:
            self.first_part_gate.set()
        await self._drain()
        if deferred is None and self.buffer is None:
            return  # ended on a part boundary: the last part's commit covered everything
        # What is not in acknowledged parts goes into segments: new objects, so no committed byte
        # is ever overwritten, and a PATCH whose body failed (checksum, 413, lost lock) never
        # gets here and writes none.
        if deferred is not None:
            task, start, data = deferred
            number = start // self.upload.part_size + 1
            position = self.start - start
            await self.tails.put(self.upload, number, position, data, self.info.expires_at)
        if self.buffer is not None:
            number = self.part_start // self.upload.part_size + 1
            position = max(self.start, self.part_start) - self.part_start
            await self.tails.put(self.upload, number, position, self.buffer, self.info.expires_at)
            if deferred is None:
                # The commit of these last bytes is left to the caller (stores/base.py: `write`),
                # which can send it with the lock's release: one Redis round trip, not two. The
                # cached head names its size, so a commit that then fails makes the next PATCH
                # load the tail instead of using it.
                self.parts.cache_tail(self.upload, number, self.buffer)
                self.buffer = None
                return
        async with self.commit_lock:
            await self._commit_upto(self.end)
        self.first_part_gate.set()
        if self.buffer is not None:
            self.parts.cache_tail(self.upload, number, self.buffer)
            self.buffer = None
        if deferred is not None:
            number = start // self.upload.part_size + 1
            self.parts.upload_in_background(self.upload, number, task)
            self.first_part = None

    async def _detach_first_part(
        self, complete: bool
    ) -> tuple[asyncio.Task[None], int, bytes] | None:
        """Let the upload of the part this PATCH started in finish in the background.

        That part's head came from earlier PATCHes; waiting for its whole upload would make a
        small PATCH as slow as a part. Instead its bytes from this PATCH are copied out, to be
        written as a segment. Returns (task, part start, those bytes), or None to wait as usual.
        """
        if self.first_part is None or complete:
            return None
        task, buffer = self.first_part
        if task.done() or not buffer.in_memory:
            return None
        # At most one background part per upload: a client faster than S3 waits here.
        await self.parts.settle(self.upload.id)
        if task.done() or not buffer.in_memory:
            return None  # finished (and released its buffer) while we waited
        start = self.start - self.start % self.upload.part_size
        data = await buffer.read_from(self.start - start)
        if task.done():
            return None  # finished meanwhile and committed as usual
        self.detached.add(start)
        self.tasks.discard(task)
        return task, start, data

    async def _abandon(self) -> None:
        if self.failed_at is not None and not self.failed:
            # A part upload failed. The parts before it may still land (parts run concurrently
            # and out of order): let them, so their bytes are committed and the client resumes
            # after them rather than re-sending what S3 already has.
            self.first_part_gate.set()
            failed_at = self.failed_at
            earlier = [task for task in self.tasks if self.starts[task] < failed_at]
            if earlier:
                await asyncio.wait(earlier)
        self.failed = True
        tasks = set(self.tasks)
        if self.first_part is not None:
            tasks.add(self.first_part[0])  # detached but not handed to PartUploads yet
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self.buffer is not None:
            self.buffer.release()
            self.buffer = None
