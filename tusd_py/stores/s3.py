"""S3 store: each upload is one S3 multipart upload; PATCH bodies become parts as they arrive.

Layout under the configured prefix, per upload:
    <id>        the object: an open multipart upload until finish() completes it
    <id>.info   the upload's info as JSON (the copy state is rebuilt from)
    <id>.part.<n>.<pos>
                a segment of the incomplete part n: bytes [pos, pos + its size) of part n that a
                PATCH brought but that do not fill the part yet. Each PATCH that ends inside a
                part writes only its own bytes as a new segment; the segments of a part, chained
                from position 0, hold its committed head. Their metadata names the multipart
                upload id. They are deleted when the upload finishes or is terminated.

Every non-trailing part has exactly the upload's part size (fixed at creation, recorded in
`info.storage`), so part N always holds bytes [(N-1)*size, N*size) and a retry re-uploads the same
part numbers. The committed offset only ever covers bytes S3 acknowledged: whole parts and
segments.

Small PATCHes (a client with chunkSize 1 MiB and 8 MiB parts) therefore cost each byte twice in
S3, once in a segment and once in its part, instead of re-sending the whole growing tail on every
PATCH. The PATCH that fills a part whose head came from earlier PATCHes writes its own bytes as a
segment, commits, answers, and leaves the part's upload (from memory: this process still holds
the head) running in the background; finish() waits for it, and rebuilds from the segments any
part that a background upload (or another instance, or a crash) did not deliver.

S3 requests per PATCH (not counting the state store's own writes):
    - one UploadPart per whole part the body fills, up to `max_concurrency` in flight;
    - when the PATCH starts inside a part: a ListObjectsV2 and a GET per segment of that part,
      unless this process wrote that head itself and still has it cached in idle buffer memory;
    - when the PATCH ends inside a part of an unfinished upload: one PUT of a segment;
    - when it fills a part started by earlier PATCHes: one PUT of a segment, and the UploadPart
      of that part in the background;
    - when the PATCH completes the upload: the last (short) part is an UploadPart; finish() then
      sends ListParts (one per 1000 parts), CompleteMultipartUpload, and a ListObjectsV2 (plus a
      DeleteObjects per 1000 segments, if there are any).

Known limit: S3 has no conditional part writes, so a writer that lost its lock without noticing
(lease expired while S3 was slow) can still overwrite a part or a segment before its commit fails.
The bytes it writes are the same client's bytes at the same offsets, so a well-behaved client is
unaffected; the offset it could not commit stays where the current lock holder put it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import os
import tempfile
from collections import Counter, OrderedDict
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from tusd_py.errors import TusError, gone, storage_unavailable
from tusd_py.ids import is_valid_upload_id
from tusd_py.info import UploadInfo
from tusd_py.metrics import s3_request
from tusd_py.stores.base import Capability, Commit, DataStore

if TYPE_CHECKING:
    from tusd_py.config import Config

log = logging.getLogger("tusd_py.stores.s3")

MIB = 1024**2
MIN_PART_SIZE = 5 * MIB  # S3: every part but the last
MAX_PART_SIZE = 5 * 1024**3
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024**4
DEFAULT_PART_SIZE = 8 * MIB
DEFAULT_BUFFER_SIZE = 64 * MIB
READ_SIZE = 256 * 1024

# Object metadata of segments (S3 lower-cases metadata keys).
META_UPLOAD = "tus-multipart-upload-id"
# How long close() lets background part uploads run before cancelling them (their bytes are safe
# in segments either way).
BACKGROUND_DRAIN_TIMEOUT = 30.0

_MISSING_KEY = frozenset({"NoSuchKey", "404", "NotFound"})
_NO_UPLOAD = frozenset({"NoSuchUpload"})
# Failures while streaming a response body (after botocore's request-level retries).
_STREAM_ERRORS = (aiohttp.ClientError, BotoCoreError, asyncio.TimeoutError)


def choose_part_size(length: int | None, configured: int, max_size: int | None = None) -> int:
    """The fixed part size of a new upload.

    At least the configured size and S3's 5 MiB minimum, grown so that the declared length (or,
    for a deferred length, `max_size` or S3's 5 TiB object limit) fits in 10,000 parts; rounded up
    to whole MiB.
    """
    target = length if length is not None else (max_size or MAX_OBJECT_SIZE)
    target = min(target, MAX_OBJECT_SIZE)
    size = max(configured, MIN_PART_SIZE, -(-target // MAX_PARTS))
    size = -(-size // MIB) * MIB
    return min(size, MAX_PART_SIZE)


def _error_detail(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc) or type(exc).__name__


def _unavailable(operation: str, upload_id: str | None, exc: BaseException) -> TusError:
    subject = f" for upload {upload_id!r}" if upload_id else ""
    return storage_unavailable(
        f"S3 {operation}{subject} failed even after retries ({_error_detail(exc)}); "
        "the upload is intact up to its current offset, resume it shortly"
    )


def _inconsistent(upload_id: str, what: str) -> TusError:
    return TusError(500, "storage-inconsistent", f"upload {upload_id!r}: {what}")


@dataclass(frozen=True)
class _Upload:
    """The S3 side of one upload, as recorded in `info.storage` at creation."""

    id: str
    key: str
    multipart_id: str | None  # None: zero-length upload, its empty object was written at once
    part_size: int

    def segment_prefix(self, number: int | None = None) -> str:
        """Prefix of the segments of part `number`, or of every part."""
        return f"{self.key}.part." if number is None else f"{self.key}.part.{number}."

    def segment_key(self, number: int, position: int) -> str:
        return f"{self.key}.part.{number}.{position}"


@dataclass
class _CachedTail:
    multipart_id: str | None
    part_number: int
    data: io.BytesIO
    size: int
    md5: Any  # hashlib state after `data` (or None), so adopting it does not hash it again


class _Budget:
    """The process-wide cap on part bytes held in memory, shared by every upload.

    Taking never waits: a buffer that gets no memory spills to a temp file instead, so uploads
    cannot deadlock on each other's reservations and memory stays bounded however many run. Idle
    budget keeps the committed tails of recent PATCHes (LRU), so that the next PATCH of the same
    upload on this instance does not read `.part` back from S3; they are evicted first.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._tails: OrderedDict[str, _CachedTail] = OrderedDict()

    def take(self, n: int) -> bool:
        while self.used + n > self.limit and self._tails:
            _, old = self._tails.popitem(last=False)
            self.used -= old.size
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n

    def keep_tail(self, upload_id: str, tail: _CachedTail) -> None:
        """Adopt `tail.data`, whose bytes are already counted in `used`."""
        self.drop_tail(upload_id)
        self._tails[upload_id] = tail

    def pop_tail(self, upload_id: str) -> _CachedTail | None:
        """Hand a cached tail over; its bytes stay counted until the new owner gives them back."""
        return self._tails.pop(upload_id, None)

    def drop_tail(self, upload_id: str) -> None:
        tail = self._tails.pop(upload_id, None)
        if tail is not None:
            self.used -= tail.size


class _PartBuffer:
    """The bytes of one part: in memory while the budget allows, else in an unlinked temp file.

    Memory is a BytesIO rather than bytes: aiohttp sends it in slices as the socket drains,
    where one big bytes body would be copied into the transport's buffer (twice the memory).
    With `md5`, the MD5 is computed as bytes arrive; sending it as Content-MD5 gives S3 an
    integrity check and lets botocore skip hashing the whole body in one go on HTTPS (unsigned
    payload).
    """

    def __init__(
        self,
        budget: _Budget,
        spool_dir: str | None,
        adopt: _CachedTail | None = None,
        *,
        md5: bool = True,
    ) -> None:
        self._budget = budget
        self._spool_dir = spool_dir
        self._memory: io.BytesIO | None = io.BytesIO() if adopt is None else adopt.data
        self.size = self._held = 0 if adopt is None else adopt.size  # adopted: already counted
        self._memory.seek(self.size)
        self._file: IO[bytes] | None = None
        if adopt is not None:
            self._md5 = adopt.md5
        else:
            self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None

    async def append(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self._md5 is not None:
            self._md5.update(data)
        if self._memory is not None:
            if self._budget.take(n):
                self._memory.write(data)
                self._held += n
                self.size += n
                return
            await self._spill()
        assert self._file is not None
        await asyncio.to_thread(self._file.write, data)
        self.size += n

    async def _spill(self) -> None:
        assert self._memory is not None
        self._file = tempfile.TemporaryFile(dir=self._spool_dir)  # noqa: SIM115 - see release()
        memory, self._memory = self._memory, None
        await asyncio.to_thread(self._file.write, memory.getbuffer())
        self._budget.give(self._held)
        self._held = 0

    def body(self) -> IO[bytes]:
        body = self._memory if self._memory is not None else self._file
        assert body is not None
        body.seek(0)  # botocore rewinds it to 0 on each retry
        return body

    def content_md5(self) -> dict[str, Any]:
        """The Content-MD5 parameter of the upload of this buffer, or none."""
        if self._md5 is None:
            return {}
        return {"ContentMD5": base64.b64encode(self._md5.digest()).decode()}

    @property
    def in_memory(self) -> bool:
        return self._memory is not None

    async def read_from(self, position: int) -> bytes:
        """A copy of the bytes from `position` to the end (a segment's worth)."""
        if self._memory is not None:
            with self._memory.getbuffer() as view:
                return bytes(view[position : self.size])
        assert self._file is not None
        return await asyncio.to_thread(
            os.pread, self._file.fileno(), self.size - position, position
        )

    def detach(self, multipart_id: str | None, part_number: int) -> _CachedTail | None:
        """Hand the in-memory bytes (still counted in the budget) to the tail cache; a spilled
        buffer is released instead (not worth keeping)."""
        if self._memory is None:
            self.release()
            return None
        tail = _CachedTail(multipart_id, part_number, self._memory, self.size, self._md5)
        self._memory, self._held = None, 0
        self.release()
        return tail

    def release(self) -> None:
        if self._held:
            self._budget.give(self._held)
            self._held = 0
        self._memory = None
        if self._file is not None:
            self._file.close()
            self._file = None


class _PatchWriter:
    """One PATCH: cuts the body into parts at absolute part boundaries, uploads them while the
    body is still arriving, and commits the prefix S3 has acknowledged contiguously."""

    def __init__(self, store: S3Store, info: UploadInfo, upload: _Upload, commit: Commit) -> None:
        self.store = store
        self.info = info
        self.upload = upload
        self._commit = commit
        self.start = self.end = info.offset
        # First byte of the part being filled; its committed head (if any) is in segments.
        self.part_start = info.offset - info.offset % upload.part_size
        self.tail_pending = info.offset - self.part_start
        self.buffer: _PartBuffer | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # The upload of the part this PATCH started in, when earlier PATCHes began it: at the end
        # of the body it may go on in the background (see _end_of_stream).
        self.first_part: tuple[asyncio.Task[None], _PartBuffer] | None = None
        # That upload starts once more bytes arrive after the part filled; when the body ends
        # there instead, only after the PATCH's segment is written, so the two do not compete.
        self.first_part_gate = asyncio.Event()
        self.detached: set[int] = set()  # part starts whose upload no longer commits
        self.error: BaseException | None = None
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

    async def _current_buffer(self) -> _PartBuffer:
        if self.buffer is None:
            if self.upload.multipart_id is None:
                raise _inconsistent(self.upload.id, "a zero-length upload cannot take bytes")
            number = self.part_start // self.upload.part_size + 1
            # Loaded lazily: a PATCH that brings no bytes never reads `.part`.
            self.buffer = await self.store._tail_buffer(self.upload, number, self.tail_pending)
            self.tail_pending = 0
        return self.buffer

    async def _submit(self) -> None:
        """Hand the current buffer to a part upload, once fewer than max_concurrency run."""
        while len(self.tasks) >= self.store.max_concurrency:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            self._raise_if_failed()
        buffer, self.buffer = self.buffer, None
        assert buffer is not None
        start = self.part_start
        self.part_start += buffer.size
        task = asyncio.create_task(self._upload_part(start, buffer, gated=start < self.start))
        self.tasks.add(task)
        task.add_done_callback(self._part_done)
        if start < self.start:
            self.first_part = (task, buffer)

    async def _upload_part(self, start: int, buffer: _PartBuffer, gated: bool = False) -> None:
        number = start // self.upload.part_size + 1
        try:
            if gated:
                await self.first_part_gate.wait()
            await self.store._upload_part(self.upload, number, buffer)
        finally:
            buffer.release()
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
        if not task.cancelled() and task.exception() is not None and self.error is None:
            self.error = task.exception()

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
            await self.store._put_segment(self.upload, number, self.start - start, data)
        if self.buffer is not None:
            number = self.part_start // self.upload.part_size + 1
            position = max(self.start, self.part_start) - self.part_start
            await self.store._put_segment(self.upload, number, position, self.buffer)
        async with self.commit_lock:
            await self._commit_upto(self.end)
        self.first_part_gate.set()
        if self.buffer is not None:
            self.store._cache_tail(self.upload, number, self.buffer)
            self.buffer = None
        if deferred is not None:
            self.store._upload_in_background(self.upload, start // self.upload.part_size + 1, task)
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
        await self.store._settle(self.upload.id)
        start = self.start - self.start % self.upload.part_size
        data = await buffer.read_from(self.start - start)
        if task.done():
            return None  # finished meanwhile and committed as usual
        self.detached.add(start)
        self.tasks.discard(task)
        return task, start, data

    async def _abandon(self) -> None:
        self.failed = True
        tasks = set(self.tasks)
        if self.first_part is not None:
            tasks.add(self.first_part[0])  # detached but not handed to the store yet
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self.buffer is not None:
            self.buffer.release()
            self.buffer = None


class S3Store(DataStore):
    """Uploads as S3 multipart uploads (AWS or any S3-compatible service), via aiobotocore.

    Credentials come from the standard AWS chain (environment, profile, instance role, ...).
    """

    capabilities = frozenset(
        {
            Capability.TERMINATION,
            Capability.DEFER_LENGTH,
            Capability.DOWNLOAD,
            Capability.CONCATENATION,
        }
    )

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        prefix: str = "",
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = 4,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        max_object_size: int | None = None,
        spool_dir: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 64,
    ) -> None:
        if not 0 < part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between 1 byte and 5 GiB, got {part_size}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.bucket = bucket
        self.endpoint = endpoint
        self.region = region
        self.prefix = prefix
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.max_object_size = max_object_size
        self.spool_dir = spool_dir
        self._budget = _Budget(buffer_size)
        # Content-MD5 lets S3 check each body and, on HTTPS, spares botocore hashing it for the
        # signature. Over plain HTTP botocore signs the body's SHA-256 anyway, which S3 checks the
        # same way: an MD5 on top would only cost CPU (about a third of the store's work per byte).
        self._content_md5 = not (endpoint or "").lower().startswith("http://")
        self._client_config = AioConfig(
            region_name=region,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_connections,
            s3={"addressing_style": "path"} if endpoint else None,
            # Many S3-compatible services reject the CRC trailers newer botocore sends by
            # default; parts carry Content-MD5 instead.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._s3: Any = None
        # Part uploads that outlive their PATCH (at most one per upload), by upload id.
        self._background: dict[str, asyncio.Task[None]] = {}
        # Logical S3 calls by operation (botocore's retries not included): what a PATCH costs.
        self.request_counts: Counter[str] = Counter()

    @classmethod
    def from_config(cls, config: Config) -> S3Store:
        assert config.s3_bucket
        return cls(
            config.s3_bucket,
            endpoint=config.s3_endpoint,
            region=config.s3_region,
            prefix=config.s3_prefix,
            part_size=config.s3_part_size,
            max_concurrency=config.s3_max_concurrency,
            buffer_size=config.s3_buffer_size,
            max_object_size=config.max_size or None,
        )

    @property
    def buffered_bytes(self) -> int:
        """Bytes of part data (and cached tails) held in memory right now."""
        return self._budget.used

    async def open(self) -> None:
        stack = contextlib.AsyncExitStack()
        self._s3 = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                config=self._client_config,
            )
        )
        self._stack = stack

    async def ready(self) -> None:
        await self._call("head_bucket", None)

    async def close(self) -> None:
        if self._background:
            # Their bytes are safe in segments: waiting only saves finish() the rebuild.
            _, late = await asyncio.wait(
                self._background.values(), timeout=BACKGROUND_DRAIN_TIMEOUT
            )
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._s3 = None

    # -- S3 calls -----------------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        upload_id: str | None,
        *,
        missing: frozenset[str] = frozenset(),
        **params: Any,
    ) -> Any:
        """One S3 call with botocore's retries; errors become `TusError`s.

        Returns None for the error codes in `missing`; a vanished multipart upload is 410.
        """
        if self._s3 is None:
            raise RuntimeError("S3Store.open() was not called")
        self.request_counts[operation] += 1
        try:
            with s3_request(operation):  # tusd_s3_request_duration_seconds
                return await getattr(self._s3, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in missing:
                return None
            if code in _NO_UPLOAD and upload_id is not None:
                raise gone(upload_id) from exc
            raise _unavailable(operation, upload_id, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(operation, upload_id, exc) from exc

    def _key(self, upload_id: str) -> str:
        # The protocol layer validates ids; this is the last line of defence for key names.
        if not is_valid_upload_id(upload_id):
            raise ValueError(f"invalid upload id {upload_id!r}")
        return self.prefix + upload_id

    def _info_key(self, upload_id: str) -> str:
        return self._key(upload_id) + ".info"

    def _upload(self, info: UploadInfo) -> _Upload:
        storage = info.storage
        if "part_size" not in storage or "key" not in storage:
            raise _inconsistent(info.id, "its info has no S3 storage details")
        return _Upload(
            id=info.id,
            key=str(storage["key"]),
            multipart_id=storage.get("multipart_upload_id"),
            part_size=int(storage["part_size"]),
        )

    async def _upload_part(self, upload: _Upload, number: int, buffer: _PartBuffer) -> str:
        response = await self._call(
            "upload_part",
            upload.id,
            Key=upload.key,
            UploadId=upload.multipart_id,
            PartNumber=number,
            Body=buffer.body(),
            ContentLength=buffer.size,
            **buffer.content_md5(),
        )
        return str(response["ETag"])

    async def _put_segment(
        self, upload: _Upload, number: int, position: int, data: _PartBuffer | bytes
    ) -> None:
        """Write bytes [position, ...) of part `number`: a whole buffer's from `position` on, or
        `data` itself."""
        md5: dict[str, Any] = {}
        if isinstance(data, _PartBuffer):
            if position == 0:
                body: IO[bytes] = data.body()
                size, md5 = data.size, data.content_md5()
                return await self._put_segment_body(upload, number, position, body, size, md5)
            data = await data.read_from(position)
        if self._content_md5:
            digest = hashlib.md5(data, usedforsecurity=False).digest()
            md5["ContentMD5"] = base64.b64encode(digest).decode()
        await self._put_segment_body(upload, number, position, io.BytesIO(data), len(data), md5)

    async def _put_segment_body(
        self,
        upload: _Upload,
        number: int,
        position: int,
        body: IO[bytes],
        size: int,
        md5: dict[str, Any],
    ) -> None:
        await self._call(
            "put_object",
            upload.id,
            Key=upload.segment_key(number, position),
            Body=body,
            ContentLength=size,
            Metadata={META_UPLOAD: upload.multipart_id or ""},
            **md5,
        )

    async def _segments(self, upload: _Upload, number: int | None = None) -> dict[str, int]:
        """Segment keys of part `number` (or of every part) with their sizes."""
        found: dict[str, int] = {}
        token: str | None = None
        for _ in range(1_000_000):  # bounded: 1000 keys a page
            params: dict[str, Any] = {"Prefix": upload.segment_prefix(number)}
            if token:
                params["ContinuationToken"] = token
            response = await self._call("list_objects_v2", upload.id, **params)
            for item in response.get("Contents", []):
                found[str(item["Key"])] = int(item["Size"])
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                break
        return found

    async def _segment_chain(self, upload: _Upload, number: int) -> list[tuple[str, int]]:
        """The segments of part `number` that continue each other from position 0, as (key,
        size); a PATCH's segment starts where the committed bytes before it ended."""
        by_position: dict[int, tuple[str, int]] = {}
        prefix = upload.segment_prefix(number)
        for key, size in (await self._segments(upload, number)).items():
            name = key[len(prefix) :]
            if name.isdigit() and size > 0:
                by_position[int(name)] = (key, size)
        chain, position = [], 0
        while position in by_position:
            chain.append(by_position[position])
            position += by_position[position][1]
        return chain

    async def _delete_segments(self, upload: _Upload, number: int | None = None) -> None:
        keys = list(await self._segments(upload, number))
        for i in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[i : i + 1000]]
            await self._call("delete_objects", upload.id, Delete={"Objects": batch, "Quiet": True})

    def _upload_in_background(self, upload: _Upload, number: int, task: asyncio.Task[None]) -> None:
        """Own a part upload that outlives its PATCH; its bytes are committed through segments.

        The part's segments stay until the upload finishes: whether the offset past them was
        really committed (a checksummed PATCH commits only once verified) is not the store's to
        know, and a PATCH resuming inside the part needs them.
        """

        async def settle() -> None:
            try:
                await task
            except Exception as exc:
                # Nothing is lost: finish() rebuilds the part from its segments.
                log.warning(
                    "upload %s: background upload of part %d failed: %s",
                    upload.id,
                    number,
                    _error_detail(exc),
                )

        background = asyncio.create_task(settle())
        self._background[upload.id] = background

        def forget(done: asyncio.Task[None]) -> None:
            if self._background.get(upload.id) is done:
                del self._background[upload.id]

        background.add_done_callback(forget)

    async def _settle(self, upload_id: str) -> None:
        """Wait for the upload's background part upload, if any (its failure is not ours)."""
        task = self._background.get(upload_id)
        if task is not None:
            await asyncio.wait([task])

    def _cache_tail(self, upload: _Upload, number: int, buffer: _PartBuffer) -> None:
        tail = buffer.detach(upload.multipart_id, number)
        if tail is not None:
            self._budget.keep_tail(upload.id, tail)

    async def _tail_buffer(self, upload: _Upload, number: int, size: int) -> _PartBuffer:
        """A buffer holding the first `size` bytes of part `number`, from segments or the cache."""
        cached = self._budget.pop_tail(upload.id)
        if cached is not None:
            same_part = (cached.multipart_id, cached.part_number) == (upload.multipart_id, number)
            if same_part and cached.size == size:
                return _PartBuffer(
                    self._budget, self.spool_dir, adopt=cached, md5=self._content_md5
                )
            self._budget.give(cached.size)
        buffer = _PartBuffer(self._budget, self.spool_dir, md5=self._content_md5)
        if size:
            try:
                await self._load_segments(upload, number, size, buffer)
            except BaseException:
                buffer.release()
                raise
        return buffer

    async def _load_segments(
        self, upload: _Upload, number: int, size: int, buf: _PartBuffer
    ) -> None:
        for key, length in await self._segment_chain(upload, number):
            if buf.size >= size:
                break
            # Only the committed length: a longer segment may hold bytes of a PATCH whose commit
            # failed (the next PATCH from the same offset replaces it).
            await self._read_segment(upload, key, min(length, size - buf.size), buf)
        if buf.size != size:
            raise _inconsistent(
                upload.id,
                f"the {size} committed bytes of part {number} are missing from S3 (its segments "
                f"under {upload.segment_prefix(number)} hold {buf.size})",
            )

    async def _read_segment(self, upload: _Upload, key: str, size: int, buf: _PartBuffer) -> None:
        response = await self._call(
            "get_object", upload.id, missing=_MISSING_KEY, Key=key, Range=f"bytes=0-{size - 1}"
        )
        if response is None or response.get("Metadata", {}).get(META_UPLOAD) != (
            upload.multipart_id or ""
        ):
            if response is not None:
                response["Body"].close()
            raise _inconsistent(upload.id, f"{key} vanished or belongs to another upload")
        try:
            async with response["Body"] as body:
                async for chunk in body.iter_chunks(MIB):
                    await buf.append(chunk)
        except _STREAM_ERRORS as exc:
            raise _unavailable("GetObject", upload.id, exc) from exc

    async def _list_parts(self, upload: _Upload) -> list[dict[str, Any]] | None:
        """Every part of the multipart upload in order, or None when it no longer exists."""
        parts: list[dict[str, Any]] = []
        marker = 0
        while True:
            response = await self._call(
                "list_parts",
                upload.id,
                missing=_NO_UPLOAD,
                Key=upload.key,
                UploadId=upload.multipart_id,
                PartNumberMarker=marker,
            )
            if response is None:
                return None
            parts.extend(response.get("Parts", []))
            if not response.get("IsTruncated"):
                break
            marker = int(response["NextPartNumberMarker"])
        parts.sort(key=lambda part: int(part["PartNumber"]))
        return parts

    async def _object_size(self, key: str, upload_id: str) -> int | None:
        response = await self._call("head_object", upload_id, missing=_MISSING_KEY, Key=key)
        return None if response is None else int(response["ContentLength"])

    # -- DataStore ------------------------------------------------------------------------------

    async def create(self, info: UploadInfo) -> None:
        key = self._key(info.id)
        if info.length is not None and info.length > MAX_OBJECT_SIZE:
            raise TusError(
                413, "upload-too-large", "S3 objects cannot be larger than 5 TiB (5497558138880)"
            )
        storage: dict[str, Any] = {
            "type": "s3",
            "bucket": self.bucket,
            "key": key,
            "part_size": choose_part_size(info.length, self.part_size, self.max_object_size),
            "multipart_upload_id": None,
        }
        if info.length == 0:
            # Complete at once: S3 cannot complete a multipart upload without parts.
            await self._call("put_object", info.id, Key=key, Body=b"")
        else:
            response = await self._call("create_multipart_upload", info.id, Key=key)
            storage["multipart_upload_id"] = response["UploadId"]
        info.storage = storage
        await self.save_info(info)

    async def save_info(self, info: UploadInfo) -> None:
        await self._call(
            "put_object",
            info.id,
            Key=self._info_key(info.id),
            Body=info.to_json().encode(),
            ContentType="application/json",
        )

    async def load_info(self, upload_id: str) -> UploadInfo | None:
        key = self._info_key(upload_id)
        response = await self._call("get_object", upload_id, missing=_MISSING_KEY, Key=key)
        if response is None:
            return None
        try:
            async with response["Body"] as body:
                data = await body.read()
        except _STREAM_ERRORS as exc:
            raise _unavailable("GetObject", upload_id, exc) from exc
        return UploadInfo.from_json(data)

    async def stored_offset(self, info: UploadInfo) -> int:
        upload = self._upload(info)
        parts = None if upload.multipart_id is None else await self._list_parts(upload)
        if parts is None:  # completed (or zero-length): the object is the truth
            return await self._object_size(upload.key, upload.id) or 0
        sizes = {int(part["PartNumber"]): int(part["Size"]) for part in parts}
        offset = 0
        for number in range(1, MAX_PARTS + 1):
            size = sizes.get(number)
            if size is None:  # not uploaded (yet): its committed bytes are in segments
                chain = await self._segment_chain(upload, number)
                size = sum(length for _, length in chain)
            offset += min(size, upload.part_size)
            if size < upload.part_size:
                break  # a short part or an incomplete one ends what is stored
        return offset if info.length is None else min(offset, info.length)

    async def write(self, info: UploadInfo, chunks: AsyncIterable[bytes], commit: Commit) -> int:
        return await _PatchWriter(self, info, self._upload(info), commit).run(chunks)

    async def finish(self, info: UploadInfo) -> None:
        upload = self._upload(info)
        if upload.multipart_id is None:
            return  # zero-length: the empty object was written by create()
        length = info.length
        if length is None:
            raise _inconsistent(info.id, "cannot finish an upload whose length is unknown")
        await self._settle(upload.id)
        parts = await self._list_parts(upload)
        if parts is None:
            # Completed already: a retried CompleteMultipartUpload whose response was lost, or a
            # finish() repeated after a crash.
            if await self._object_size(upload.key, upload.id) == length:
                return
            raise _inconsistent(info.id, "its multipart upload is gone but the object is not whole")
        by_number = {int(part["PartNumber"]): part for part in parts}
        run: list[dict[str, Any]] = []
        for number, start in enumerate(range(0, length, upload.part_size), start=1):
            expected = min(upload.part_size, length - start)
            part = by_number.get(number)
            if part is None or int(part["Size"]) != expected:
                # Still in segments: the last bytes when the length was declared after they
                # arrived (deferred length), a part whose background upload failed or ran on
                # another instance, or a crash between commit and finish.
                part = await self._part_from_segments(upload, number, expected)
            run.append(part)
        await asyncio.gather(self._complete(upload, run), self._delete_segments(upload))
        self._budget.drop_tail(upload.id)

    async def _part_from_segments(self, upload: _Upload, number: int, size: int) -> dict[str, Any]:
        buffer = await self._tail_buffer(upload, number, size)
        try:
            etag = await self._upload_part(upload, number, buffer)
        finally:
            buffer.release()
        return {"PartNumber": number, "ETag": etag, "Size": size}

    async def _complete(self, upload: _Upload, parts: list[dict[str, Any]]) -> None:
        if not parts:  # a deferred-length upload that turned out empty
            await self._call("put_object", upload.id, Key=upload.key, Body=b"")
            await self._call(
                "abort_multipart_upload",
                upload.id,
                missing=_NO_UPLOAD,
                Key=upload.key,
                UploadId=upload.multipart_id,
            )
            return
        done = await self._call(
            "complete_multipart_upload",
            upload.id,
            missing=_NO_UPLOAD,
            Key=upload.key,
            UploadId=upload.multipart_id,
            MultipartUpload={
                "Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
            },
        )
        if done is None:
            # botocore retried a completion that had succeeded; check the object is there.
            expected = sum(int(p["Size"]) for p in parts)
            if await self._object_size(upload.key, upload.id) != expected:
                raise gone(upload.id)

    async def terminate(self, info: UploadInfo) -> None:
        self._budget.drop_tail(info.id)
        background = self._background.get(info.id)
        if background is not None:
            background.cancel()
            await asyncio.wait([background])
        key = str(info.storage.get("key") or self._key(info.id))
        upload = _Upload(info.id, key, None, 1)
        calls = [
            self._call("delete_object", info.id, Key=name)
            for name in (key, self._info_key(info.id))
        ]
        calls.append(self._delete_segments(upload))
        multipart_id = info.storage.get("multipart_upload_id")
        if multipart_id:
            calls.append(
                self._call(
                    "abort_multipart_upload",
                    info.id,
                    missing=_NO_UPLOAD,
                    Key=key,
                    UploadId=multipart_id,
                )
            )
        await asyncio.gather(*calls)

    async def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        upload = self._upload(info)
        response = await self._call(
            "get_object",
            info.id,
            missing=_MISSING_KEY,
            Key=upload.key,
            Range=f"bytes={start}-{end - 1}",
        )
        if response is None:
            raise _inconsistent(info.id, "the finished upload's object is missing from S3")
        try:
            async with response["Body"] as body:
                async for chunk in body.iter_chunks(READ_SIZE):
                    yield chunk
        except _STREAM_ERRORS as exc:
            raise _unavailable("GetObject", info.id, exc) from exc

    async def list_upload_ids(self) -> AsyncIterator[str]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Prefix": self.prefix, "Delimiter": "/"}
            if token:
                params["ContinuationToken"] = token
            response = await self._call("list_objects_v2", None, **params)
            for item in response.get("Contents", []):
                name = str(item["Key"])[len(self.prefix) :]
                if name.endswith(".info") and is_valid_upload_id(name[: -len(".info")]):
                    yield name[: -len(".info")]
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                return

    # -- concatenation ------------------------------------------------------------------------

    async def concatenate(self, final: UploadInfo, partials: list[UploadInfo]) -> None:
        """Build the final's object from the partials' objects as one multipart upload.

        A stretch of at least 5 MiB of one partial becomes UploadPartCopy parts: S3 copies the
        bytes itself (ranges of at most 5 GiB). Shorter stretches cannot be a part on their own,
        so they are read back and gathered, with neighbouring bytes, into uploaded parts of at
        least 5 MiB; only the last part may be shorter. The multipart upload is completed here,
        so finish() then finds the object whole. Part numbers depend only on the partials, so a
        retry after a failure overwrites the same parts.
        """
        upload = self._upload(final)
        if upload.multipart_id is None:
            return  # zero-length: create() wrote the empty object
        if await self._list_parts(upload) is None:
            if await self._object_size(upload.key, upload.id) == final.length:
                return  # completed by an earlier attempt whose response was lost
            raise _inconsistent(
                final.id, "its multipart upload is gone but the object is not whole"
            )
        parts: list[dict[str, Any]] = []
        pending = _PartBuffer(self._budget, self.spool_dir, md5=self._content_md5)
        try:
            for partial in partials:
                size = partial.length or 0
                position = 0
                if 0 < pending.size < MIN_PART_SIZE:
                    # Top the gathered bytes up to a valid part from this partial's head.
                    position = min(size, MIN_PART_SIZE - pending.size)
                    await self._read_into(partial, 0, position, pending)
                if pending.size >= MIN_PART_SIZE:
                    parts.append(await self._upload_gathered(upload, len(parts) + 1, pending))
                    pending = _PartBuffer(self._budget, self.spool_dir, md5=self._content_md5)
                if size - position >= MIN_PART_SIZE:
                    for start, end in _copy_ranges(position, size):
                        parts.append(
                            await self._copy_part(upload, len(parts) + 1, partial, start, end)
                        )
                elif position < size:
                    await self._read_into(partial, position, size, pending)
            if pending.size:
                parts.append(await self._upload_gathered(upload, len(parts) + 1, pending))
        finally:
            pending.release()
        if len(parts) > MAX_PARTS:
            raise TusError(
                400,
                "too-many-parts",
                f"the partials of {final.id!r} need {len(parts)} S3 parts; S3 allows {MAX_PARTS}",
            )
        await self._complete(upload, parts)

    async def _read_into(
        self, partial: UploadInfo, start: int, end: int, buffer: _PartBuffer
    ) -> None:
        key = self._upload(partial).key
        response = await self._call(
            "get_object",
            partial.id,
            missing=_MISSING_KEY,
            Key=key,
            Range=f"bytes={start}-{end - 1}",
        )
        if response is None:
            raise _inconsistent(partial.id, "the finished partial upload's object is missing")
        try:
            async with response["Body"] as body:
                async for chunk in body.iter_chunks(MIB):
                    await buffer.append(chunk)
        except _STREAM_ERRORS as exc:
            raise _unavailable("GetObject", partial.id, exc) from exc

    async def _upload_gathered(
        self, upload: _Upload, number: int, buffer: _PartBuffer
    ) -> dict[str, Any]:
        try:
            etag = await self._upload_part(upload, number, buffer)
            return {"PartNumber": number, "ETag": etag, "Size": buffer.size}
        finally:
            buffer.release()

    async def _copy_part(
        self, upload: _Upload, number: int, partial: UploadInfo, start: int, end: int
    ) -> dict[str, Any]:
        response = await self._call(
            "upload_part_copy",
            upload.id,
            Key=upload.key,
            UploadId=upload.multipart_id,
            PartNumber=number,
            CopySource={"Bucket": self.bucket, "Key": self._upload(partial).key},
            CopySourceRange=f"bytes={start}-{end - 1}",
        )
        etag = str(response["CopyPartResult"]["ETag"])
        return {"PartNumber": number, "ETag": etag, "Size": end - start}


def _copy_ranges(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) cut into equal UploadPartCopy ranges of at most 5 GiB (each >= 5 MiB)."""
    count = -(-(end - start) // MAX_PART_SIZE)
    step = -(-(end - start) // count)
    return [(s, min(s + step, end)) for s in range(start, end, step)]
