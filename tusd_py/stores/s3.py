"""S3 store: each upload is one S3 multipart upload; PATCH bodies become parts as they arrive.

Layout under the configured prefix, per upload:
    <id>        the object: an open multipart upload until finish() completes it
    <id>.info   the upload's info as JSON (the copy state is rebuilt from)
    <id>.part   the incomplete part: committed bytes at the end of an unfinished upload that do
                not fill a whole part yet. Its metadata names the part number it belongs to and
                the multipart upload id, so a leftover from an earlier part is recognised as stale.

Every non-trailing part has exactly the upload's part size (fixed at creation, recorded in
`info.storage`), so part N always holds bytes [(N-1)*size, N*size) and a retry re-uploads the same
part numbers. The committed offset only ever covers bytes S3 acknowledged: whole parts, plus the
`.part` object once it is written.

S3 requests per PATCH (not counting the state store's own writes):
    - one UploadPart per whole part the body fills, up to `max_concurrency` in flight;
    - when the PATCH starts inside a part: one ranged GET of `.part`, unless this process wrote
      that tail itself and still has it cached in idle buffer memory;
    - when the PATCH ends inside a part of an unfinished upload: one PUT of `.part`;
    - when the PATCH completes the upload: the last (short) part is an UploadPart; finish() then
      sends ListParts (one per 1000 parts), CompleteMultipartUpload and a DELETE of `.part`.

Known limit: S3 has no conditional part writes, so a writer that lost its lock without noticing
(lease expired while S3 was slow) can still overwrite a part or `.part` before its commit fails.
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

# Object metadata of `.part` (S3 lower-cases metadata keys).
META_PART = "tus-part-number"
META_UPLOAD = "tus-multipart-upload-id"

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

    @property
    def tail_key(self) -> str:
        return self.key + ".part"


@dataclass
class _CachedTail:
    multipart_id: str | None
    part_number: int
    data: io.BytesIO
    size: int
    md5: Any  # hashlib state after `data`, so adopting the tail does not hash it again


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
    The MD5 is computed as bytes arrive; sending it as Content-MD5 gives S3 an integrity check and
    lets botocore skip hashing the whole body in one go on HTTPS (unsigned payload).
    """

    def __init__(self, budget: _Budget, spool_dir: str | None, adopt: _CachedTail | None = None):
        self._budget = budget
        self._spool_dir = spool_dir
        self._memory: io.BytesIO | None = io.BytesIO() if adopt is None else adopt.data
        self.size = self._held = 0 if adopt is None else adopt.size  # adopted: already counted
        self._memory.seek(self.size)
        self._file: IO[bytes] | None = None
        self._md5 = hashlib.md5(usedforsecurity=False) if adopt is None else adopt.md5

    async def append(self, data: bytes | memoryview) -> None:
        n = len(data)
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

    def content_md5(self) -> str:
        return base64.b64encode(self._md5.digest()).decode()

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
        # First byte of the part being filled; its committed head (if any) is still in `.part`.
        self.part_start = info.offset - info.offset % upload.part_size
        self.tail_pending = info.offset - self.part_start
        self.buffer: _PartBuffer | None = None
        self.tasks: set[asyncio.Task[None]] = set()
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
        task = asyncio.create_task(self._upload_part(start, buffer))
        self.tasks.add(task)
        task.add_done_callback(self._part_done)

    async def _upload_part(self, start: int, buffer: _PartBuffer) -> None:
        number = start // self.upload.part_size + 1
        try:
            await self.store._upload_part(self.upload, number, buffer)
        finally:
            buffer.release()
        async with self.commit_lock:
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
        await self._drain()
        if self.buffer is None:
            return  # ended on a part boundary: the last part's commit covered everything
        # A tail of an unfinished upload becomes `.part`. Overwriting the committed `.part` is
        # safe here: either this tail belongs to the same part, and then it starts with the same
        # committed bytes (the next PATCH reads only the committed length of it), or it belongs to
        # a later part, and then the part that held the old tail was acknowledged and committed
        # by _drain() above, so the old `.part` is no longer needed. A PATCH whose body failed
        # (checksum, 413, lost lock) never gets here and leaves `.part` untouched.
        if self.info.offset < self.part_start:
            # "Committed" above may only be remembered, not applied: a checksummed PATCH holds
            # its commits until the body is verified. Apply the part boundary for real first;
            # if that fails (lost lock), the old `.part` must stay, as the offset points into it.
            async with self.commit_lock:
                await self._commit(self.part_start)
        number = self.part_start // self.upload.part_size + 1
        await self.store._put_tail(self.upload, number, self.buffer)
        async with self.commit_lock:
            await self._commit_upto(self.end)
        self.store._cache_tail(self.upload, number, self.buffer)
        self.buffer = None

    async def _abandon(self) -> None:
        self.failed = True
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks)
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
            ContentMD5=buffer.content_md5(),
        )
        return str(response["ETag"])

    async def _put_tail(self, upload: _Upload, number: int, buffer: _PartBuffer) -> None:
        await self._call(
            "put_object",
            upload.id,
            Key=upload.tail_key,
            Body=buffer.body(),
            ContentLength=buffer.size,
            ContentMD5=buffer.content_md5(),
            Metadata={META_PART: str(number), META_UPLOAD: upload.multipart_id or ""},
        )

    def _cache_tail(self, upload: _Upload, number: int, buffer: _PartBuffer) -> None:
        tail = buffer.detach(upload.multipart_id, number)
        if tail is not None:
            self._budget.keep_tail(upload.id, tail)

    async def _tail_buffer(self, upload: _Upload, number: int, size: int) -> _PartBuffer:
        """A buffer holding the first `size` bytes of part `number`, from `.part` or the cache."""
        cached = self._budget.pop_tail(upload.id)
        if cached is not None:
            same_part = (cached.multipart_id, cached.part_number) == (upload.multipart_id, number)
            if same_part and cached.size == size:
                return _PartBuffer(self._budget, self.spool_dir, adopt=cached)
            self._budget.give(cached.size)
        buffer = _PartBuffer(self._budget, self.spool_dir)
        if size:
            try:
                await self._load_tail(upload, number, size, buffer)
            except BaseException:
                buffer.release()
                raise
        return buffer

    async def _load_tail(self, upload: _Upload, number: int, size: int, buf: _PartBuffer) -> None:
        # Only the committed length: a longer `.part` may hold bytes of a PATCH whose commit
        # failed, written over the same committed head (see _PatchWriter._end_of_stream).
        response = await self._call(
            "get_object",
            upload.id,
            missing=_MISSING_KEY,
            Key=upload.tail_key,
            Range=f"bytes=0-{size - 1}",
        )
        metadata = {} if response is None else response.get("Metadata", {})
        if (metadata.get(META_PART), metadata.get(META_UPLOAD)) != (
            str(number),
            upload.multipart_id,
        ):
            if response is not None:
                response["Body"].close()
            raise _inconsistent(
                upload.id,
                f"the {size} committed bytes of part {number} are missing from S3 "
                f"({upload.tail_key} is absent or belongs to another part)",
            )
        try:
            async with response["Body"] as body:
                async for chunk in body.iter_chunks(MIB):
                    await buf.append(chunk)
        except _STREAM_ERRORS as exc:
            raise _unavailable("GetObject", upload.id, exc) from exc
        if buf.size != size:
            raise _inconsistent(upload.id, f"{upload.tail_key} has fewer than {size} bytes")

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

    @staticmethod
    def _contiguous(parts: list[dict[str, Any]], part_size: int) -> list[dict[str, Any]]:
        """Parts 1..n without a gap, stopping after the first short (necessarily last) part."""
        run: list[dict[str, Any]] = []
        for part in parts:
            if int(part["PartNumber"]) != len(run) + 1:
                break
            run.append(part)
            if int(part["Size"]) != part_size:
                break
        return run

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
        run = self._contiguous(parts, upload.part_size)
        offset = sum(int(part["Size"]) for part in run)
        if offset % upload.part_size == 0:
            offset += await self._stored_tail_size(upload, len(run) + 1)
        return offset if info.length is None else min(offset, info.length)

    async def _stored_tail_size(self, upload: _Upload, number: int) -> int:
        response = await self._call(
            "head_object", upload.id, missing=_MISSING_KEY, Key=upload.tail_key
        )
        if response is None:
            return 0
        metadata = response.get("Metadata", {})
        if (metadata.get(META_PART), metadata.get(META_UPLOAD)) != (
            str(number),
            upload.multipart_id,
        ):
            return 0  # a stale tail of an earlier part
        return int(response["ContentLength"])

    async def write(self, info: UploadInfo, chunks: AsyncIterable[bytes], commit: Commit) -> int:
        return await _PatchWriter(self, info, self._upload(info), commit).run(chunks)

    async def finish(self, info: UploadInfo) -> None:
        upload = self._upload(info)
        if upload.multipart_id is None:
            return  # zero-length: the empty object was written by create()
        length = info.length
        if length is None:
            raise _inconsistent(info.id, "cannot finish an upload whose length is unknown")
        parts = await self._list_parts(upload)
        if parts is None:
            # Completed already: a retried CompleteMultipartUpload whose response was lost, or a
            # finish() repeated after a crash.
            if await self._object_size(upload.key, upload.id) == length:
                return
            raise _inconsistent(info.id, "its multipart upload is gone but the object is not whole")
        run = self._contiguous(parts, upload.part_size)
        stored = sum(int(part["Size"]) for part in run)
        if stored < length and stored % upload.part_size == 0:
            # The last bytes are still the incomplete part: the length was declared after they
            # arrived (deferred length), or a crash hit between commit and finish.
            run.append(await self._tail_as_last_part(upload, len(run) + 1, length - stored))
            stored = length
        if stored != length:
            raise _inconsistent(info.id, f"S3 holds {stored} contiguous bytes, expected {length}")
        await asyncio.gather(
            self._complete(upload, run),
            self._call("delete_object", upload.id, Key=upload.tail_key),
        )
        self._budget.drop_tail(upload.id)

    async def _tail_as_last_part(self, upload: _Upload, number: int, size: int) -> dict[str, Any]:
        if size > upload.part_size:
            raise _inconsistent(upload.id, f"{size} bytes are missing from S3")
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
        key = str(info.storage.get("key") or self._key(info.id))
        calls = [
            self._call("delete_object", info.id, Key=name)
            for name in (key, key + ".part", self._info_key(info.id))
        ]
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
        pending = _PartBuffer(self._budget, self.spool_dir)
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
                    pending = _PartBuffer(self._budget, self.spool_dir)
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
