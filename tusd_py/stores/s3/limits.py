"""S3's multipart limits, and the part size a new upload gets within them."""

from __future__ import annotations

MIB = 1024**2
MIN_PART_SIZE = 5 * MIB  # S3: every part but the last
MAX_PART_SIZE = 5 * 1024**3
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024**4


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
