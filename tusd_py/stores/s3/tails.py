"""Where the S3 store keeps the committed bytes of a part that is not full yet (its tail).

S3 cannot append to a part, and every part but the last must be at least 5 MiB, so the bytes of
a PATCH that ends inside a part must be kept somewhere durable until later PATCHes fill the part
and it can be uploaded whole. Two places, chosen per upload at creation (`info.storage["tails"]`):

- `SegmentTails` ("s3"): each such PATCH writes its own bytes as a new object
  `<key>.part.<n>.<pos>`; nothing but S3 is needed, but every byte of a small PATCH goes to S3
  twice (segment, then part), and each PATCH waits for one PUT.
- `RedisTails` ("redis"): the same segments as Redis strings: about a millisecond per MiB
  instead of a PUT, and every byte goes to S3 once. Redis holds about a part per unfinished
  upload: a part's segments are deleted as soon as the part is in S3 and the committed offset
  covers it. Used when Redis holds the state anyway, for part
  sizes up to `REDIS_TAIL_MAX_PART` (a Redis string holds at most 512 MB).

Either way a tail is only ever read up to the committed offset: bytes past it belong to a PATCH
whose commit failed, and the next PATCH from that offset replaces them.
"""

from __future__ import annotations

import io
import time
from abc import ABC, abstractmethod
from typing import IO, TYPE_CHECKING, Any, ClassVar

from tusd_py.redis_client import RedisClient, redis_errors, text, upload_key
from tusd_py.stores.s3.errors import MISSING_KEY, inconsistent
from tusd_py.stores.s3.limits import MIB
from tusd_py.stores.s3.parts import PartBuffer, append_object, digest_params
from tusd_py.stores.s3.upload import DEFAULT_TAILS, S3Upload

if TYPE_CHECKING:
    from tusd_py.stores.s3.client import S3Client

REDIS_TAIL_MAX_PART = 64 * MIB
# A tail outlives its upload's expiry by this much, so that the expiry sweep, not Redis, ends it.
REDIS_TAIL_GRACE = 24 * 3600.0
# Object metadata of segments (S3 lower-cases metadata keys).
META_UPLOAD = "tus-multipart-upload-id"


class TailStore(ABC):
    kind: ClassVar[str]

    @abstractmethod
    async def put(
        self,
        upload: S3Upload,
        number: int,
        position: int,
        data: PartBuffer | bytes,
        expires_at: float | None,
    ) -> None:
        """Keep bytes [position, ...) of part `number`: `data` itself, or a buffer's bytes from
        `position` on. Bytes before `position` are committed and stay; any after go."""

    @abstractmethod
    async def length(self, upload: S3Upload, number: int) -> int:
        """How many bytes of part `number`, from its start, are kept (committed or not)."""

    @abstractmethod
    async def load(self, upload: S3Upload, number: int, size: int, buf: PartBuffer) -> None:
        """Append the first `size` bytes of part `number` to `buf`."""

    @abstractmethod
    async def release(self, upload: S3Upload, number: int) -> None:
        """Part `number` is in S3 and the committed offset covers it: its tail may go."""

    @abstractmethod
    async def delete(self, upload: S3Upload) -> None:
        """Every tail of the upload (it finished or was terminated)."""

    @abstractmethod
    async def close(self) -> None: ...

    async def last_write(self, upload: S3Upload) -> float | None:
        """When a tail of the upload was last written (epoch seconds), None when unknown."""
        return None


class SegmentTails(TailStore):
    """Tails as S3 objects, one per PATCH that ended inside a part; kept until the upload ends
    (deleting them earlier would cost requests and save nothing worth having)."""

    kind = DEFAULT_TAILS

    def __init__(self, client: S3Client) -> None:
        self._client = client

    async def put(
        self,
        upload: S3Upload,
        number: int,
        position: int,
        data: PartBuffer | bytes,
        expires_at: float | None,
    ) -> None:
        if isinstance(data, PartBuffer):
            if position == 0:  # the whole buffer: send it as it is, no copy
                return await self._put(
                    upload, number, position, data.body(), data.size, await data.digest_params()
                )
            data = await data.read_from(position)
        digest = await digest_params(self._client.digest_for(upload), data)
        await self._put(upload, number, position, io.BytesIO(data), len(data), digest)

    async def _put(
        self,
        upload: S3Upload,
        number: int,
        position: int,
        body: IO[bytes],
        size: int,
        digest: dict[str, Any],
    ) -> None:
        await self._client.call(
            "put_object",
            upload.id,
            **upload.where,
            Key=upload.segment_key(number, position),
            Body=body,
            ContentLength=size,
            Metadata={META_UPLOAD: upload.multipart_id or ""},
            **digest,
        )

    async def length(self, upload: S3Upload, number: int) -> int:
        return sum(size for _, size in await self._chain(upload, number))

    async def load(self, upload: S3Upload, number: int, size: int, buf: PartBuffer) -> None:
        for key, length in await self._chain(upload, number):
            if buf.size >= size:
                break
            # Only the committed length: a longer segment may hold bytes of a PATCH whose commit
            # failed (the next PATCH from the same offset replaces it).
            await self._read(upload, key, min(length, size - buf.size), buf)
        if buf.size != size:
            raise inconsistent(
                upload.id,
                f"the {size} committed bytes of part {number} are missing from S3 (its segments "
                f"under {upload.segment_prefix(number)} hold {buf.size})",
            )

    async def release(self, upload: S3Upload, number: int) -> None:
        pass  # segments stay until the upload ends

    async def close(self) -> None:
        pass

    async def delete(self, upload: S3Upload) -> None:
        keys = list(await self._segments(upload))
        for i in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[i : i + 1000]]
            await self._client.call(
                "delete_objects",
                upload.id,
                **upload.where,
                Delete={"Objects": batch, "Quiet": True},
            )

    async def last_write(self, upload: S3Upload) -> float | None:
        times = [item["LastModified"].timestamp() for item in await self._listed(upload)]
        return max(times, default=None)

    async def _listed(self, upload: S3Upload, number: int | None = None) -> list[dict[str, Any]]:
        """The listing of the segments of part `number` (or of every part)."""
        found: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(1_000_000):  # bounded: 1000 keys a page
            params: dict[str, Any] = {**upload.where, "Prefix": upload.segment_prefix(number)}
            if token:
                params["ContinuationToken"] = token
            response = await self._client.call("list_objects_v2", upload.id, **params)
            found.extend(response.get("Contents", []))
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                break
        return found

    async def _segments(self, upload: S3Upload, number: int | None = None) -> dict[str, int]:
        """Segment keys of part `number` (or of every part) with their sizes."""
        return {str(item["Key"]): int(item["Size"]) for item in await self._listed(upload, number)}

    async def _chain(self, upload: S3Upload, number: int) -> list[tuple[str, int]]:
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

    async def _read(self, upload: S3Upload, key: str, size: int, buf: PartBuffer) -> None:
        response = await self._client.call(
            "get_object",
            upload.id,
            missing=MISSING_KEY,
            **upload.where,
            Key=key,
            Range=f"bytes=0-{size - 1}",
        )
        if response is None or response.get("Metadata", {}).get(META_UPLOAD) != (
            upload.multipart_id or ""
        ):
            if response is not None:
                response["Body"].close()
            raise inconsistent(upload.id, f"{key} vanished or belongs to another upload")
        await append_object(response, buf, upload.id)


class RedisTails(TailStore):
    """Tails as Redis strings beside the upload's state (same hash tag): like `SegmentTails`, one
    per PATCH that ended inside a part, `<prefix>:{<id>}:tail:<n>:<pos>`, listed with their
    sizes in the hash `<prefix>:{<id>}:tails` (field `<n>:<pos>`). A new key per PATCH rather
    than APPEND to one: appending to a growing string reallocates and copies it every time.

    Redis must not evict them: configure it with `maxmemory-policy noeviction`, as the state and
    locks need anyway (docs/redis.md)."""

    kind = "redis"

    def __init__(self, client: RedisClient, prefix: str) -> None:
        """`client` must not decode responses (tails are bytes); it is closed by `close()`."""
        self._client = client
        self._prefix = prefix

    def _key(self, upload: S3Upload, field: str) -> str:
        return upload_key(self._prefix, upload.id, f"tail:{field}")

    def _index(self, upload: S3Upload) -> str:
        return upload_key(self._prefix, upload.id, "tails")

    async def put(
        self,
        upload: S3Upload,
        number: int,
        position: int,
        data: PartBuffer | bytes,
        expires_at: float | None,
    ) -> None:
        if isinstance(data, PartBuffer):
            data = await data.read_from(position)
        field = f"{number}:{position}"
        key, index = self._key(upload, field), self._index(upload)
        with redis_errors("MULTI/EXEC save-tail"):
            async with self._client.pipeline(transaction=True) as pipe:
                if expires_at is None:
                    pipe.set(key, data)  # a SET without an expiry drops any the key had
                    pipe.hset(index, field, len(data))
                    pipe.persist(index)
                else:  # a grace period past the expiry; never a time already past
                    at_ms = int((max(expires_at, time.time()) + REDIS_TAIL_GRACE) * 1000)
                    pipe.set(key, data, pxat=at_ms)
                    pipe.hset(index, field, len(data))
                    pipe.pexpireat(index, at_ms)
                await pipe.execute()

    async def _fields(self, upload: S3Upload) -> dict[tuple[int, int], int]:
        """(part number, position) -> size of every segment of the upload."""
        with redis_errors("HGETALL"):
            found = await self._client.hgetall(self._index(upload))
        segments = {}
        for field, size in found.items():
            number, _, position = text(field).partition(":")
            if number.isdigit() and position.isdigit():
                segments[int(number), int(position)] = int(size)
        return segments

    async def _chain(self, upload: S3Upload, number: int) -> list[tuple[str, int]]:
        """The segments of part `number` that continue each other from position 0."""
        fields = await self._fields(upload)
        sizes = {pos: size for (n, pos), size in fields.items() if n == number}
        chain, position = [], 0
        while sizes.get(position):
            chain.append((f"{number}:{position}", sizes[position]))
            position += sizes[position]
        return chain

    async def length(self, upload: S3Upload, number: int) -> int:
        return sum(size for _, size in await self._chain(upload, number))

    async def load(self, upload: S3Upload, number: int, size: int, buf: PartBuffer) -> None:
        chain = await self._chain(upload, number)
        needed, total = [], 0
        for field, length in chain:
            if total >= size:
                break
            needed.append((field, min(length, size - total)))
            total += length
        with redis_errors("MGET"):
            values = await self._client.mget([self._key(upload, f) for f, _ in needed])
        for (_, length), value in zip(needed, values, strict=True):
            if not isinstance(value, bytes) or len(value) < length:
                break
            # Only the committed length: a longer segment may hold bytes of a PATCH whose
            # commit failed (the next PATCH from the same offset replaces it).
            await buf.append(memoryview(value)[:length])
        if buf.size != size:
            raise inconsistent(
                upload.id,
                f"the {size} committed bytes of part {number} are missing from Redis (its tail "
                f"holds {buf.size}; was it evicted? tusd-py needs maxmemory-policy noeviction)",
            )

    async def release(self, upload: S3Upload, number: int) -> None:
        fields = [f"{n}:{pos}" for n, pos in await self._fields(upload) if n == number]
        await self._drop(upload, fields)

    async def delete(self, upload: S3Upload) -> None:
        fields = [f"{n}:{pos}" for n, pos in await self._fields(upload)]
        await self._drop(upload, fields)
        with redis_errors("UNLINK"):
            await self._client.unlink(self._index(upload))

    async def _drop(self, upload: S3Upload, fields: list[str]) -> None:
        index = self._index(upload)
        for i in range(0, len(fields), 1000):
            batch = fields[i : i + 1000]
            with redis_errors("MULTI/EXEC drop-tails"):
                async with self._client.pipeline(transaction=True) as pipe:
                    # Not pipe.unlink(): a coroutine on redis-py's cluster pipeline, which
                    # would silently never queue the command.
                    pipe.execute_command("UNLINK", *[self._key(upload, f) for f in batch])
                    pipe.hdel(index, *batch)
                    await pipe.execute()

    async def close(self) -> None:
        await self._client.aclose()
