"""What the store keeps, across PATCHes, of the parts it uploads: the memory budget and the tail
cache, where each upload's incomplete part waits (its tail store), part uploads that outlive
their PATCH, and the tails that may go once the committed offset covers their part."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import Any

from tusd_py.errors import TusError
from tusd_py.stores.s3.client import S3Client
from tusd_py.stores.s3.errors import error_detail, inconsistent
from tusd_py.stores.s3.parts import Budget, CachedTail, PartBuffer
from tusd_py.stores.s3.tails import RedisTails, SegmentTails, TailStore
from tusd_py.stores.s3.upload import S3Upload

log = logging.getLogger("tusd_py.stores.s3")

# How long close() lets background part uploads run before cancelling them (their bytes are safe
# in segments either way).
BACKGROUND_DRAIN_TIMEOUT = 30.0
# Uploads whose released-on-next-PATCH tails this process remembers (see tail_uploaded).
MAX_UPLOADED_TAILS = 10_000


class PartUploads:
    """The parts of every upload this process writes, between and beyond their PATCHes."""

    def __init__(
        self,
        client: S3Client,
        *,
        buffer_size: int,
        spool_dir: str | None,
        max_concurrency: int,
    ) -> None:
        self.client = client
        self.spool_dir = spool_dir
        #: Part uploads one PATCH runs at once.
        self.max_concurrency = max_concurrency
        self._budget = Budget(buffer_size)
        # Part uploads that outlive their PATCH (at most one per upload), by upload id: the task
        # that waits for it and releases the tails, and the part upload itself. Cancel the part
        # upload, not the waiter: a waiter cancelled before it started would leave its part
        # upload running, owned by nobody; a cancelled part ends its waiter too.
        self._background: dict[str, tuple[asyncio.Task[None], asyncio.Task[None]]] = {}
        self._segment_tails = SegmentTails(client)
        #: Where new uploads keep their incomplete parts when Redis holds them (use_redis_tails).
        self.redis_tails: RedisTails | None = None
        # Parts in S3 whose tails wait for the committed offset to cover them, by upload id.
        self._uploaded_tails: OrderedDict[str, set[int]] = OrderedDict()

    @property
    def buffered_bytes(self) -> int:
        """Bytes of part data (and cached tails) held in memory right now."""
        return self._budget.used

    def use_redis_tails(self, tails: RedisTails) -> None:
        self.redis_tails = tails

    def tails(self, upload: S3Upload) -> TailStore:
        """Where the upload's incomplete part waits."""
        if upload.tails == RedisTails.kind:
            if self.redis_tails is None:
                raise inconsistent(
                    upload.id,
                    "its incomplete part is kept in Redis, but this instance has no Redis tails "
                    "(start it with the same --redis-url as the others)",
                )
            return self.redis_tails
        return self._segment_tails

    def new_buffer(self, upload: S3Upload, adopt: CachedTail | None = None) -> PartBuffer:
        """A buffer for a part (or segment) of `upload`, hashed as its parts must be."""
        digest = self.client.digest_for(upload)
        return PartBuffer(self._budget, self.spool_dir, adopt=adopt, digest=digest)

    # -- tails ----------------------------------------------------------------------------------

    async def tail_buffer(self, upload: S3Upload, number: int, size: int) -> PartBuffer:
        """A buffer holding the first `size` bytes of part `number`, from its tail or the cache."""
        cached = self._budget.pop_tail(upload.id)
        if cached is not None:
            same_part = (cached.multipart_id, cached.part_number) == (upload.multipart_id, number)
            if same_part and cached.size == size:
                return self.new_buffer(upload, adopt=cached)
            self._budget.give(cached.size)
        buffer = self.new_buffer(upload)
        if size:
            try:
                await self.tails(upload).load(upload, number, size, buffer)
            except BaseException:
                buffer.release()
                raise
        return buffer

    def cache_tail(self, upload: S3Upload, number: int, buffer: PartBuffer) -> None:
        """Keep the committed head of part `number` in idle memory for the upload's next PATCH;
        `buffer` is given up either way."""
        tail = buffer.detach(upload.multipart_id, number)
        if tail is not None:
            self._budget.keep_tail(upload.id, tail)

    def tail_uploaded(self, upload: S3Upload, number: int) -> None:
        """Part `number`, which had a tail, is in S3: the tail may go once the committed offset
        covers the part (see release_tails)."""
        if upload.tails == SegmentTails.kind:
            return  # segments stay until the upload ends
        self._uploaded_tails.setdefault(upload.id, set()).add(number)
        self._uploaded_tails.move_to_end(upload.id)
        while len(self._uploaded_tails) > MAX_UPLOADED_TAILS:  # the rest go at finish or expiry
            self._uploaded_tails.popitem(last=False)

    async def release_tails(self, upload: S3Upload, committed: int) -> None:
        """Drop the tails of parts that are in S3 and end at or before `committed`."""
        numbers = self._uploaded_tails.get(upload.id)
        if not numbers:
            return
        done = {n for n in numbers if n * upload.part_size <= committed}
        for number in sorted(done):
            await self.tails(upload).release(upload, number)
            numbers.discard(number)
        if not numbers:
            self._uploaded_tails.pop(upload.id, None)

    async def upload_from_tail(self, upload: S3Upload, number: int, size: int) -> dict[str, Any]:
        """Upload part `number` from its first `size` bytes in the tail (or the cache)."""
        buffer = await self.tail_buffer(upload, number, size)
        try:
            return await self.client.upload_part(upload, number, buffer)
        finally:
            buffer.release()

    # -- part uploads that outlive their PATCH ----------------------------------------------------

    def upload_in_background(self, upload: S3Upload, number: int, task: asyncio.Task[None]) -> None:
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
                await self.release_tails(upload, number * upload.part_size)

        background = asyncio.create_task(settle())
        self._background[upload.id] = (background, task)

        def forget(done: asyncio.Task[None]) -> None:
            if self._background.get(upload.id, (None,))[0] is done:
                del self._background[upload.id]

        background.add_done_callback(forget)

    async def settle(self, upload_id: str) -> None:
        """Wait for the upload's background part upload, if any (its failure is not ours)."""
        background = self._background.get(upload_id)
        if background is not None:
            await asyncio.wait([background[0]])

    def in_background(self, upload_id: str) -> bool:
        """Whether a part upload of the upload outlives its PATCH right now."""
        return upload_id in self._background

    # -- the end of an upload -------------------------------------------------------------------

    def forget(self, upload_id: str) -> None:
        """The upload finished: drop its cached tail and what is known about its tails."""
        self._budget.drop_tail(upload_id)
        self._uploaded_tails.pop(upload_id, None)

    async def cancel(self, upload_id: str) -> None:
        """The upload is being terminated: stop its background part upload and forget it."""
        self._budget.drop_tail(upload_id)
        background = self._background.get(upload_id)
        if background is not None:
            waiter, part = background
            part.cancel()
            await asyncio.wait([waiter, part])
        self._uploaded_tails.pop(upload_id, None)

    async def close(self) -> None:
        """Let background part uploads end (or cancel them) and close the Redis tails."""
        if self._background:
            # Their bytes are safe in segments: waiting only saves finish() the rebuild.
            waiters = [waiter for waiter, _ in self._background.values()]
            _, late = await asyncio.wait(waiters, timeout=BACKGROUND_DRAIN_TIMEOUT)
            late_parts = [part for waiter, part in self._background.values() if waiter in late]
            for part in late_parts:
                part.cancel()
            if late:
                await asyncio.wait([*late, *late_parts])
        if self.redis_tails is not None:
            await self.redis_tails.close()
