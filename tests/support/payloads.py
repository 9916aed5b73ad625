"""Bytes to upload in-process: reproducible payloads, their digest, and request bodies in chunks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
from collections.abc import AsyncIterator, Iterable


def payload(size: int, seed: int = 1) -> bytes:
    """`size` pseudo-random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def heavy_metadata(rng: random.Random, size: int = 6000) -> str:
    """An `Upload-Metadata` header with `size` random bytes (6,000: 8,000+ characters, under the
    8 KiB limit): issue 14's worst case, since decoded they are mostly U+FFFD, not ASCII."""
    value = base64.b64encode(rng.randbytes(size)).decode()
    name = base64.b64encode(b"a-file-name.bin").decode()
    return f"filename {name},blob {value}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def chunked(data: bytes, sizes: Iterable[int] | int) -> AsyncIterator[bytes]:
    """`data` as a request body: chunks of `sizes` (one size, or one each, then the rest)."""
    sizes = iter([sizes] * (len(data) // sizes + 1) if isinstance(sizes, int) else sizes)
    pos = 0
    while pos < len(data):
        step = next(sizes, len(data) - pos)
        yield data[pos : pos + step]
        pos += step
        await asyncio.sleep(0)
