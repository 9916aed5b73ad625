"""The checksum extension: `Upload-Checksum: <algorithm> <base64 digest>` on a PATCH.

The digest is computed while the body streams into the store, so nothing is buffered. Nothing
of a checksummed PATCH may become visible before the digest is verified, and the store contract
gives exactly that: a store commits through a callback and undoes whatever is not committed when
its chunk iterator raises. `ChecksumGuard` therefore hands the store a chunk iterator that raises
a 460 at the end of a mismatching body (or of a body that never arrived whole, which cannot be
verified), and a commit callback that only remembers the offset until verification passed.

checksum-trailer is not offered: ASGI has no event for request trailers. uvicorn's h11 parser
drops them; its httptools parser appends them to the request's header list if and when they
are parsed, which may be before or after the handler looked. A request announcing
`Trailer: Upload-Checksum` is therefore answered 400 up front.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from tusd_py.errors import TusError, bad_request
from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock
from tusd_py.protocol.body import BodyReader
from tusd_py.state.base import StateStore
from tusd_py.stores.base import Commit


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class _Crc32:
    """CRC-32 (the zlib/IEEE polynomial) with a hashlib-like face; the digest is 4 bytes,
    big-endian, as most clients encode it."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes, /) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


_ALGORITHMS: dict[str, tuple[Callable[[], Hasher], int]] = {
    "sha1": (hashlib.sha1, 20),
    "md5": (hashlib.md5, 16),
    "sha256": (hashlib.sha256, 32),
    "sha512": (hashlib.sha512, 64),
    "crc32": (_Crc32, 4),
}
ALGORITHMS = tuple(_ALGORITHMS)  # advertised in Tus-Checksum-Algorithm, in this order


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def hasher(self) -> Hasher:
        return _ALGORITHMS[self.algorithm][0]()


def parse_checksum(value: str | None, trailer: str | None = None) -> Checksum | None:
    """The parsed `Upload-Checksum` header; a 400 for an unknown algorithm or a malformed digest,
    and for a request that announces the checksum as a trailer (`trailer`: its Trailer field)."""
    if trailer is not None and "upload-checksum" in trailer.lower():
        # Rejected rather than ignored: an unverified body must not pass for a verified one.
        raise bad_request(
            "this server cannot read request trailers (checksum-trailer is not supported); "
            "send Upload-Checksum as a header",
            "checksum-trailer-unsupported",
        )
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in _ALGORITHMS:
        raise bad_request(
            f"Upload-Checksum uses the algorithm {algorithm!r}; this server supports "
            + ", ".join(ALGORITHMS),
            "checksum-algorithm-unsupported",
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    expected_size = _ALGORITHMS[algorithm][1]
    if len(digest) != expected_size:
        raise bad_request(
            f"Upload-Checksum must be '{algorithm} <base64 of the {expected_size}-byte digest>', "
            f"got {value!r}",
            "invalid-checksum",
        )
    return Checksum(algorithm, digest)


def checksum_mismatch(message: str) -> TusError:
    return TusError(460, "checksum-mismatch", message)


class ChecksumGuard:
    """Verifies one PATCH body against its checksum and holds its commits until it did."""

    def __init__(
        self,
        checksum: Checksum,
        reader: BodyReader,
        state: StateStore,
        info: UploadInfo,
        lock: Lock,
    ) -> None:
        self._checksum = checksum
        self._reader = reader
        self._state = state
        self._info = info
        self._lock = lock
        self._verified = False
        self._pending: int | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        hasher = self._checksum.hasher()
        async for chunk in self._reader.chunks():
            hasher.update(chunk)
            yield chunk
        # Raised here, inside the store's loop, so the store discards the bytes of this PATCH.
        if not self._reader.complete:
            raise checksum_mismatch(
                f"the body ended after {self._reader.received} bytes, before it was complete "
                f"({self._reader.stop_reason or 'client went away'}), so its checksum could not "
                "be verified; nothing of it was stored"
            )
        if hasher.digest() != self._checksum.digest:
            raise checksum_mismatch(
                f"the {self._checksum.algorithm} digest of the {self._reader.received}-byte body "
                f"is {base64.b64encode(hasher.digest()).decode()}, not "
                f"{base64.b64encode(self._checksum.digest).decode()} as Upload-Checksum says; "
                "nothing of it was stored"
            )
        self._verified = True

    @property
    def verified(self) -> bool:
        """The whole body arrived and matched the checksum."""
        return self._verified

    async def commit(self, offset: int) -> None:
        # A store may commit while the body is still streaming (S3 parts): remember, and apply
        # only once verified. The store serialises its commit calls, so flushing here is safe.
        self._pending = max(offset, self._pending or 0)
        if self._verified:
            await self._flush()

    async def apply(self) -> None:
        """Commit what the store reported durable, now that the whole body is verified."""
        if self._verified:
            await self._flush()

    async def _flush(self) -> None:
        if self._pending is not None and self._pending > self._info.offset:
            offset, self._pending = self._pending, None
            await self._state.commit(self._info, offset, self._lock)


def guarded(
    checksum: Checksum | None,
    reader: BodyReader,
    state: StateStore,
    info: UploadInfo,
    lock: Lock,
    commit: Commit,
) -> tuple[AsyncIterator[bytes], Commit, ChecksumGuard | None]:
    """The chunks and commit callback to hand a store: verified ones when a checksum is given."""
    if checksum is None:
        return reader.chunks(), commit, None
    guard = ChecksumGuard(checksum, reader, state, info, lock)
    return guard.chunks(), guard.commit, guard
