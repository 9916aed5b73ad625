"""The bytes of the part being filled, as this process holds them: in memory within a
process-wide budget, or spilled to a temp file; and the digest that vouches for them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO, Any, Literal

from tusd_py.stores.s3.errors import STREAM_ERRORS, s3_unavailable
from tusd_py.stores.s3.limits import MIB
from tusd_py.stores.s3.signing import PAYLOAD_SHA256

# What vouches for a body sent to S3: its Content-MD5 where botocore leaves the body unsigned
# (HTTPS), the SHA-256 of the signature where it signs it (plain HTTP, signing.py), or, with S3
# checksums on (`--s3-checksum sha256`), one SHA-256 that is both the flexible checksum S3 checks
# and keeps (`x-amz-checksum-sha256`) and the signed payload hash, over HTTP and HTTPS alike.
# Each is computed in a worker thread (hashlib lets go of the GIL), never by botocore on the loop.
PartDigest = Literal["md5", "sha256", "checksum-sha256"]
HASH_BLOCK = MIB  # reads of a spilled part while hashing it
#: The `ChecksumAlgorithm` of S3 for the digest kind that is also S3's flexible checksum.
CHECKSUM_ALGORITHM = "SHA256"


def part_digest(content_md5: bool, checksum: bool = False) -> PartDigest:
    if checksum:
        return "checksum-sha256"
    return "md5" if content_md5 else "sha256"


def _new_hash(kind: PartDigest) -> Any:
    return hashlib.md5(usedforsecurity=False) if kind == "md5" else hashlib.sha256()


def _hashed(kind: PartDigest, data: bytes | memoryview) -> Any:
    digest = _new_hash(kind)
    digest.update(data)
    return digest


def _digest_param(kind: PartDigest, digest: Any) -> dict[str, Any]:
    if kind == "md5":
        return {"ContentMD5": base64.b64encode(digest.digest()).decode()}
    params: dict[str, Any] = {PAYLOAD_SHA256: digest.hexdigest()}
    if kind == "checksum-sha256":
        params["ChecksumAlgorithm"] = CHECKSUM_ALGORITHM
        params["ChecksumSHA256"] = base64.b64encode(digest.digest()).decode()
    return params


def checksum_params(kind: PartDigest, data: bytes) -> dict[str, Any]:
    """The flexible checksum (and signed hash) of a small body (`.info`, an empty object),
    hashed on the spot; nothing when checksums are off (botocore hashes it for the signature)."""
    if kind != "checksum-sha256":
        return {}
    return _digest_param(kind, _hashed(kind, data))


def _hashed_in_place(kind: PartDigest, memory: io.BytesIO) -> Any:
    """Hash a buffer's bytes without copying them (in a thread); the view ends with it."""
    with memory.getbuffer() as view:
        return _hashed(kind, view)


async def digest_params(kind: PartDigest, data: bytes) -> dict[str, Any]:
    """The `upload_part` or `put_object` parameter that vouches for `data`, hashed in a thread."""
    return _digest_param(kind, await asyncio.to_thread(_hashed, kind, data))


async def append_object(response: Any, buffer: PartBuffer, upload_id: str) -> None:
    """Stream the body of a GetObject response into `buffer`."""
    try:
        async with response["Body"] as body:
            async for chunk in body.iter_chunks(MIB):
                await buffer.append(chunk)
    except STREAM_ERRORS as exc:
        raise s3_unavailable("GetObject", upload_id, exc) from exc


@dataclass
class CachedTail:
    multipart_id: str | None
    part_number: int
    data: io.BytesIO
    size: int


class Budget:
    """The process-wide cap on part bytes held in memory, shared by every upload.

    Taking never waits: a buffer that gets no memory spills to a temp file instead, so uploads
    cannot deadlock on each other's reservations and memory stays bounded however many run. Idle
    budget keeps the committed tails of recent PATCHes (LRU), so that the next PATCH of the same
    upload on this instance does not read `.part` back from S3; they are evicted first.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._tails: OrderedDict[str, CachedTail] = OrderedDict()

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

    def keep_tail(self, upload_id: str, tail: CachedTail) -> None:
        """Adopt `tail.data`, whose bytes are already counted in `used`."""
        self.drop_tail(upload_id)
        self._tails[upload_id] = tail

    def pop_tail(self, upload_id: str) -> CachedTail | None:
        """Hand a cached tail over; its bytes stay counted until the new owner gives them back."""
        return self._tails.pop(upload_id, None)

    def drop_tail(self, upload_id: str) -> None:
        tail = self._tails.pop(upload_id, None)
        if tail is not None:
            self.used -= tail.size


class PartBuffer:
    """The bytes of one part: in memory while the budget allows, else in an unlinked temp file.

    Memory is a BytesIO rather than bytes: aiohttp sends it in slices as the socket drains,
    where one big bytes body would be copied into the transport's buffer (twice the memory).
    Its `digest` is computed in a worker thread once the buffer is whole, while the event loop
    receives the next bytes: as Content-MD5 it gives S3 an integrity check and lets botocore skip
    hashing the body on HTTPS (unsigned payload); as SHA-256 it is the payload hash botocore signs
    on plain HTTP (signing.py). Either way botocore does not hash the body on the loop.
    """

    def __init__(
        self,
        budget: Budget,
        spool_dir: str | None,
        adopt: CachedTail | None = None,
        *,
        digest: PartDigest = "md5",
    ) -> None:
        self._budget = budget
        self._spool_dir = spool_dir
        self._memory: io.BytesIO | None = io.BytesIO() if adopt is None else adopt.data
        self.size = self._held = 0 if adopt is None else adopt.size  # adopted: already counted
        self._memory.seek(self.size)
        self._file: IO[bytes] | None = None
        self._digest = digest

    async def append(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self._memory is not None:
            if self._budget.take(n):
                self._memory.write(data)
                self._held += n
                self.size += n
                return
            await self._spill()
        await asyncio.to_thread(self._write_through, data)
        self.size += n

    async def _spill(self) -> None:
        assert self._memory is not None
        self._file = tempfile.TemporaryFile(dir=self._spool_dir)  # noqa: SIM115 - see release()
        memory, self._memory = self._memory, None
        await asyncio.to_thread(self._write_through, memory.getbuffer())
        self._budget.give(self._held)
        self._held = 0

    def _write_through(self, data: bytes | memoryview) -> None:
        """Write and flush (in a thread): hashing and tail reads `pread` the descriptor, which
        does not see what the file object still buffers."""
        assert self._file is not None
        self._file.write(data)
        self._file.flush()

    def body(self) -> IO[bytes]:
        body = self._memory if self._memory is not None else self._file
        assert body is not None
        body.seek(0)  # botocore rewinds it to 0 on each retry
        return body

    async def digest_params(self, *, whole: bool = False) -> dict[str, Any]:
        """The `upload_part` (or `put_object`) parameter that vouches for this buffer's bytes.

        `whole`: the buffer will not grow again (a part about to be sent), so it is hashed in
        place. Otherwise the bytes are copied first: a view would keep the buffer from growing
        while the thread runs (a cached tail does grow), and a cancelled request leaves that
        thread running."""
        if self._memory is not None:
            if whole:
                hashed = await asyncio.to_thread(_hashed_in_place, self._digest, self._memory)
                return _digest_param(self._digest, hashed)
            return await digest_params(self._digest, self._memory.getvalue())
        return _digest_param(self._digest, await asyncio.to_thread(self._hash_file))

    def _hash_file(self) -> Any:
        """Hash the spilled file (in a thread)."""
        assert self._file is not None
        digest, position = _new_hash(self._digest), 0
        while position < self.size:
            block = os.pread(self._file.fileno(), min(HASH_BLOCK, self.size - position), position)
            if not block:
                raise OSError(f"the spilled part is {position} bytes, not {self.size}")
            digest.update(block)
            position += len(block)
        return digest

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

    def detach(self, multipart_id: str | None, part_number: int) -> CachedTail | None:
        """Hand the in-memory bytes (still counted in the budget) to the tail cache; a spilled
        buffer is released instead (not worth keeping)."""
        if self._memory is None:
            self.release()
            return None
        tail = CachedTail(multipart_id, part_number, self._memory, self.size)
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
