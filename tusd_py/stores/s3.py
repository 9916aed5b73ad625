"""S3 store: each upload is one S3 multipart upload; PATCH bodies become parts as they arrive.

Layout under the configured prefix, per upload:
    <id>        the object: an open multipart upload until finish() completes it
    <id>.info   the upload's info as JSON (the copy state is rebuilt from)
    <id>.part.<n>.<pos>
                a segment of the incomplete part n: bytes [pos, pos + its size) of part n that a
                PATCH brought but that do not fill the part yet, when the upload keeps its tails
                in S3; with Redis they are Redis strings instead (stores/s3_tails.py). Each PATCH
                that ends inside a part writes only its own bytes as a new segment; the segments
                of a part, chained from position 0, hold its committed head.

Every non-trailing part has exactly the upload's part size (fixed at creation, recorded in
`info.storage`), so part N always holds bytes [(N-1)*size, N*size) and a retry re-uploads the same
part numbers. The committed offset only ever covers bytes S3 acknowledged: whole parts and
segments.

Small PATCHes (a client with chunkSize 1 MiB and 8 MiB parts) therefore cost each byte one
segment write and one part upload, instead of re-sending the whole growing tail on every PATCH;
with tails in Redis the segment write is a Redis SET, not an S3 PUT. The PATCH that fills a part
whose head came from earlier PATCHes writes its own bytes as a segment, commits, answers, and
leaves the part's upload (from memory: this process still holds the head) running in the
background; finish() waits for it, and rebuilds from the segments any
part that a background upload (or another instance, or a crash) did not deliver.

S3 requests per PATCH with tails in S3 (not counting the state store's own writes; with tails in
Redis, the segment requests below are Redis round trips instead):
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
import contextlib
import logging
from collections import Counter, OrderedDict
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from tusd_py.errors import TusError, gone
from tusd_py.ids import is_valid_upload_id
from tusd_py.info import UploadInfo
from tusd_py.metrics import s3_request
from tusd_py.redis_client import make_client
from tusd_py.stores import s3_signing
from tusd_py.stores.base import Commit, DataStore
from tusd_py.stores.s3_parts import (
    MISSING_KEY,
    STREAM_ERRORS,
    Budget,
    CachedTail,
    PartBuffer,
    S3Upload,
    append_object,
    error_detail,
    inconsistent,
    part_digest,
    s3_unavailable,
)
from tusd_py.stores.s3_tails import REDIS_TAIL_MAX_PART, RedisTails, SegmentTails, TailStore

if TYPE_CHECKING:
    from tusd_py.config import Config, S3Tails

log = logging.getLogger("tusd_py.stores.s3")

MIB = 1024**2
MIN_PART_SIZE = 5 * MIB  # S3: every part but the last
MAX_PART_SIZE = 5 * 1024**3
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024**4
DEFAULT_PART_SIZE = 8 * MIB
DEFAULT_BUFFER_SIZE = 64 * MIB
READ_SIZE = 256 * 1024

# How long close() lets background part uploads run before cancelling them (their bytes are safe
# in segments either way).
BACKGROUND_DRAIN_TIMEOUT = 30.0
# Uploads whose released-on-next-PATCH tails this process remembers (see _tail_uploaded).
MAX_UPLOADED_TAILS = 10_000

_NO_UPLOAD = frozenset({"NoSuchUpload"})


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


class _PatchWriter:
    """One PATCH: cuts the body into parts at absolute part boundaries, uploads them while the
    body is still arriving, and commits the prefix S3 has acknowledged contiguously."""

    def __init__(self, store: S3Store, info: UploadInfo, upload: S3Upload, commit: Commit) -> None:
        self.store = store
        self.info = info
        self.upload = upload
        self._commit = commit
        self.tails = store._tails(upload)
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
        self.starts[task] = start
        task.add_done_callback(self._part_done)
        if start < self.start:
            self.first_part = (task, buffer)

    async def _upload_part(self, start: int, buffer: PartBuffer, gated: bool = False) -> None:
        number = start // self.upload.part_size + 1
        try:
            if gated:
                await self.first_part_gate.wait()
            await self.store._upload_part(self.upload, number, buffer)
        finally:
            buffer.release()
        if start < self.start:  # its head came from earlier PATCHes' tail
            self.store._tail_uploaded(self.upload, number)
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
        async with self.commit_lock:
            await self._commit_upto(self.end)
        self.first_part_gate.set()
        if self.buffer is not None:
            self.store._cache_tail(self.upload, number, self.buffer)
            self.buffer = None
        if deferred is not None:
            number = start // self.upload.part_size + 1
            self.store._upload_in_background(self.upload, number, task)
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

    storage_type = "s3store"
    shared_medium = True

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
        self._budget = Budget(buffer_size)
        # Content-MD5 lets S3 check each body and, on HTTPS, spares botocore hashing it for the
        # signature. Over plain HTTP botocore signs the body's SHA-256 anyway, which S3 checks the
        # same way: an MD5 on top would only cost CPU (about a third of the store's work per byte).
        # Bodies are hashed in a worker thread either way (s3_parts.PartDigest).
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
        # Part uploads that outlive their PATCH (at most one per upload), by upload id: the task
        # that waits for it and releases the tails, and the part upload itself. Cancel the part
        # upload, not the waiter: a waiter cancelled before it started would leave its part
        # upload running, owned by nobody; a cancelled part ends its waiter too.
        self._background: dict[str, tuple[asyncio.Task[None], asyncio.Task[None]]] = {}
        self._segment_tails = SegmentTails(self._call, content_md5=self._content_md5)
        self._redis_tails: RedisTails | None = None
        self.tails_choice: S3Tails = "auto"
        # Parts in S3 whose tails wait for the committed offset to cover them, by upload id.
        self._uploaded_tails: OrderedDict[str, set[int]] = OrderedDict()
        # Logical S3 calls by operation (botocore's retries not included): what a PATCH costs.
        self.request_counts: Counter[str] = Counter()

    @classmethod
    def from_config(cls, config: Config) -> S3Store:
        assert config.s3_bucket
        store = cls(
            config.s3_bucket,
            endpoint=config.s3_endpoint,
            region=config.s3_region,
            prefix=config.s3_prefix,
            part_size=config.s3_part_size,
            max_concurrency=config.s3_max_concurrency,
            buffer_size=config.s3_buffer_size,
            max_object_size=config.max_size or None,
        )
        store.tails_choice = config.s3_tails
        return store

    def describe(self, info: UploadInfo) -> dict[str, str]:
        key = str(info.storage.get("key") or self.prefix + info.id)
        return {"Type": self.storage_type, "Bucket": self.bucket, "Key": key}

    async def declare_length(self, info: UploadInfo) -> None:
        upload = self._upload(info)
        if info.length is not None and info.length > upload.part_size * MAX_PARTS:
            raise TusError(
                413,
                "upload-too-large",
                f"Upload-Length {info.length} does not fit in {MAX_PARTS} parts of "
                f"{upload.part_size} bytes",
            )

    def use_redis(self, config: Config) -> None:
        """Keep incomplete parts in Redis unless `--s3-tails s3` (stores/s3_tails.py)."""
        if config.redis_url and self.tails_choice != "s3":
            client = make_client(config.redis_url, decode=False)  # tails are bytes
            self.use_redis_tails(RedisTails(client, config.redis_prefix))

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
        s3_signing.install(self._s3.meta.events)
        self._stack = stack

    def _new_buffer(self, adopt: CachedTail | None = None) -> PartBuffer:
        digest = part_digest(self._content_md5)
        return PartBuffer(self._budget, self.spool_dir, adopt=adopt, digest=digest)

    async def ready(self) -> None:
        await self._call("head_bucket", None)

    async def close(self) -> None:
        if self._background:
            # Their bytes are safe in segments: waiting only saves finish() the rebuild.
            waiters = [waiter for waiter, _ in self._background.values()]
            _, late = await asyncio.wait(waiters, timeout=BACKGROUND_DRAIN_TIMEOUT)
            late_parts = [part for waiter, part in self._background.values() if waiter in late]
            for part in late_parts:
                part.cancel()
            if late:
                await asyncio.wait([*late, *late_parts])
        if self._redis_tails is not None:
            await self._redis_tails.close()
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
            raise s3_unavailable(operation, upload_id, exc) from exc
        except BotoCoreError as exc:
            raise s3_unavailable(operation, upload_id, exc) from exc

    def _key(self, upload_id: str) -> str:
        # The protocol layer validates ids; this is the last line of defence for key names.
        if not is_valid_upload_id(upload_id):
            raise ValueError(f"invalid upload id {upload_id!r}")
        return self.prefix + upload_id

    def _info_key(self, upload_id: str) -> str:
        return self._key(upload_id) + ".info"

    def _upload(self, info: UploadInfo) -> S3Upload:
        storage = info.storage
        if "part_size" not in storage or "key" not in storage:
            raise inconsistent(info.id, "its info has no S3 storage details")
        return S3Upload(
            id=info.id,
            key=str(storage["key"]),
            multipart_id=storage.get("multipart_upload_id"),
            part_size=int(storage["part_size"]),
            tails=str(storage.get("tails", SegmentTails.kind)),
        )

    async def _upload_part(self, upload: S3Upload, number: int, buffer: PartBuffer) -> str:
        response = await self._call(
            "upload_part",
            upload.id,
            Key=upload.key,
            UploadId=upload.multipart_id,
            PartNumber=number,
            Body=buffer.body(),
            ContentLength=buffer.size,
            **await buffer.digest_params(),
        )
        return str(response["ETag"])

    def _upload_in_background(
        self, upload: S3Upload, number: int, task: asyncio.Task[None]
    ) -> None:
        """Own a part upload that outlives its PATCH, whose bytes are committed through its tail
        (the PATCH committed before handing it over): once the part is in S3, the tail may go."""

        async def settle() -> None:
            try:
                await task
            except Exception as exc:
                # Nothing is lost: finish() rebuilds the part from its tail.
                log.warning(
                    "upload %s: background upload of part %d failed: %s",
                    upload.id,
                    number,
                    error_detail(exc),
                )
                return
            with contextlib.suppress(TusError):  # not released now: at the next PATCH or finish
                await self._release_tails(upload, number * upload.part_size)

        background = asyncio.create_task(settle())
        self._background[upload.id] = (background, task)

        def forget(done: asyncio.Task[None]) -> None:
            if self._background.get(upload.id, (None,))[0] is done:
                del self._background[upload.id]

        background.add_done_callback(forget)

    async def _settle(self, upload_id: str) -> None:
        """Wait for the upload's background part upload, if any (its failure is not ours)."""
        background = self._background.get(upload_id)
        if background is not None:
            await asyncio.wait([background[0]])

    def _tails(self, upload: S3Upload) -> TailStore:
        if upload.tails == RedisTails.kind:
            if self._redis_tails is None:
                raise inconsistent(
                    upload.id,
                    "its incomplete part is kept in Redis, but this instance has no Redis tails "
                    "(start it with the same --redis-url as the others)",
                )
            return self._redis_tails
        return self._segment_tails

    def use_redis_tails(self, tails: RedisTails) -> None:
        """Keep the incomplete parts of new uploads (with parts up to REDIS_TAIL_MAX_PART) in
        Redis instead of S3 segments; closed with the store."""
        self._redis_tails = tails

    def _tail_uploaded(self, upload: S3Upload, number: int) -> None:
        """Part `number`, which had a tail, is in S3: the tail may go once the committed offset
        covers the part (see _release_tails)."""
        if upload.tails == SegmentTails.kind:
            return  # segments stay until the upload ends
        self._uploaded_tails.setdefault(upload.id, set()).add(number)
        self._uploaded_tails.move_to_end(upload.id)
        while len(self._uploaded_tails) > MAX_UPLOADED_TAILS:  # the rest go at finish or expiry
            self._uploaded_tails.popitem(last=False)

    async def _release_tails(self, upload: S3Upload, committed: int) -> None:
        """Drop the tails of parts that are in S3 and end at or before `committed`."""
        numbers = self._uploaded_tails.get(upload.id)
        if not numbers:
            return
        done = {n for n in numbers if n * upload.part_size <= committed}
        for number in sorted(done):
            await self._tails(upload).release(upload, number)
            numbers.discard(number)
        if not numbers:
            self._uploaded_tails.pop(upload.id, None)

    def _cache_tail(self, upload: S3Upload, number: int, buffer: PartBuffer) -> None:
        tail = buffer.detach(upload.multipart_id, number)
        if tail is not None:
            self._budget.keep_tail(upload.id, tail)

    async def _tail_buffer(self, upload: S3Upload, number: int, size: int) -> PartBuffer:
        """A buffer holding the first `size` bytes of part `number`, from its tail or the cache."""
        cached = self._budget.pop_tail(upload.id)
        if cached is not None:
            same_part = (cached.multipart_id, cached.part_number) == (upload.multipart_id, number)
            if same_part and cached.size == size:
                return self._new_buffer(adopt=cached)
            self._budget.give(cached.size)
        buffer = self._new_buffer()
        if size:
            try:
                await self._tails(upload).load(upload, number, size, buffer)
            except BaseException:
                buffer.release()
                raise
        return buffer

    async def _list_parts(self, upload: S3Upload) -> list[dict[str, Any]] | None:
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
        response = await self._call("head_object", upload_id, missing=MISSING_KEY, Key=key)
        return None if response is None else int(response["ContentLength"])

    # -- DataStore ------------------------------------------------------------------------------

    async def create(self, info: UploadInfo) -> None:
        key = self._key(info.id)
        if info.length is not None and info.length > MAX_OBJECT_SIZE:
            raise TusError(
                413, "upload-too-large", "S3 objects cannot be larger than 5 TiB (5497558138880)"
            )
        part_size = choose_part_size(info.length, self.part_size, self.max_object_size)
        in_redis = self._redis_tails is not None and part_size <= REDIS_TAIL_MAX_PART
        storage: dict[str, Any] = {
            "type": "s3",
            "bucket": self.bucket,
            "key": key,
            "part_size": part_size,
            "multipart_upload_id": None,
            "tails": RedisTails.kind if in_redis else SegmentTails.kind,
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
        response = await self._call("get_object", upload_id, missing=MISSING_KEY, Key=key)
        if response is None:
            return None
        try:
            async with response["Body"] as body:
                data = await body.read()
        except STREAM_ERRORS as exc:
            raise s3_unavailable("GetObject", upload_id, exc) from exc
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
            if size is None:  # not uploaded (yet): its committed bytes are in its tail
                size = await self._tails(upload).length(upload, number)
            offset += min(size, upload.part_size)
            if size < upload.part_size:
                break  # a short part or an incomplete one ends what is stored
        return offset if info.length is None else min(offset, info.length)

    async def write(self, info: UploadInfo, chunks: AsyncIterable[bytes], commit: Commit) -> int:
        upload = self._upload(info)
        await self._release_tails(upload, info.offset)
        return await _PatchWriter(self, info, upload, commit).run(chunks)

    async def finish(self, info: UploadInfo) -> None:
        upload = self._upload(info)
        if upload.multipart_id is None:
            return  # zero-length: the empty object was written by create()
        length = info.length
        if length is None:
            raise inconsistent(info.id, "cannot finish an upload whose length is unknown")
        await self._settle(upload.id)
        parts = await self._list_parts(upload)
        if parts is None:
            # Completed already: a retried CompleteMultipartUpload whose response was lost, or a
            # finish() repeated after a crash.
            if await self._object_size(upload.key, upload.id) == length:
                return
            raise inconsistent(info.id, "its multipart upload is gone but the object is not whole")
        by_number = {int(part["PartNumber"]): part for part in parts}
        run: list[dict[str, Any]] = []
        for number, start in enumerate(range(0, length, upload.part_size), start=1):
            expected = min(upload.part_size, length - start)
            part = by_number.get(number)
            if part is None or int(part["Size"]) != expected:
                # Still in segments: the last bytes when the length was declared after they
                # arrived (deferred length), a part whose background upload failed or ran on
                # another instance, or a crash between commit and finish.
                part = await self._part_from_tail(upload, number, expected)
            run.append(part)
        await asyncio.gather(self._complete(upload, run), self._tails(upload).delete(upload))
        self._budget.drop_tail(upload.id)
        self._uploaded_tails.pop(upload.id, None)

    async def _part_from_tail(self, upload: S3Upload, number: int, size: int) -> dict[str, Any]:
        buffer = await self._tail_buffer(upload, number, size)
        try:
            etag = await self._upload_part(upload, number, buffer)
        finally:
            buffer.release()
        return {"PartNumber": number, "ETag": etag, "Size": size}

    async def _complete(self, upload: S3Upload, parts: list[dict[str, Any]]) -> None:
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
            waiter, part = background
            part.cancel()
            await asyncio.wait([waiter, part])
        key = str(info.storage.get("key") or self._key(info.id))
        upload = S3Upload(info.id, key, None, 1, str(info.storage.get("tails", SegmentTails.kind)))
        self._uploaded_tails.pop(info.id, None)
        calls = [
            self._call("delete_object", info.id, Key=name)
            for name in (key, self._info_key(info.id))
        ]
        calls.append(self._tails(upload).delete(upload))
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
            missing=MISSING_KEY,
            Key=upload.key,
            Range=f"bytes={start}-{end - 1}",
        )
        if response is None:
            raise inconsistent(info.id, "the finished upload's object is missing from S3")
        try:
            async with response["Body"] as body:
                async for chunk in body.iter_chunks(READ_SIZE):
                    yield chunk
        except STREAM_ERRORS as exc:
            raise s3_unavailable("GetObject", info.id, exc) from exc

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
            raise inconsistent(final.id, "its multipart upload is gone but the object is not whole")
        parts: list[dict[str, Any]] = []
        pending = self._new_buffer()
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
                    pending = self._new_buffer()
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
        self, partial: UploadInfo, start: int, end: int, buffer: PartBuffer
    ) -> None:
        key = self._upload(partial).key
        response = await self._call(
            "get_object",
            partial.id,
            missing=MISSING_KEY,
            Key=key,
            Range=f"bytes={start}-{end - 1}",
        )
        if response is None:
            raise inconsistent(partial.id, "the finished partial upload's object is missing")
        await append_object(response, buffer, partial.id)

    async def _upload_gathered(
        self, upload: S3Upload, number: int, buffer: PartBuffer
    ) -> dict[str, Any]:
        try:
            etag = await self._upload_part(upload, number, buffer)
            return {"PartNumber": number, "ETag": etag, "Size": buffer.size}
        finally:
            buffer.release()

    async def _copy_part(
        self, upload: S3Upload, number: int, partial: UploadInfo, start: int, end: int
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
