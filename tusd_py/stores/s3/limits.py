"""S3's multipart limits, and the part size a new upload gets within them.

Providers differ: Scaleway allows 1,000 parts, not 10,000; the part count and the smallest part
are options (`--s3-max-parts`, `--s3-min-part-size`; docs/s3.md has a table per provider).
"""

from __future__ import annotations

from tusd_py.errors import TusError

MIB = 1024**2
MIN_PART_SIZE = 5 * MIB  # S3: every part but the last
MAX_PART_SIZE = 5 * 1024**3
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024**4


def choose_part_size(
    length: int | None,
    configured: int,
    max_size: int | None = None,
    *,
    max_parts: int = MAX_PARTS,
    min_part_size: int = MIN_PART_SIZE,
) -> int:
    """The fixed part size of a new upload.

    At least the configured size and the smallest part allowed, grown so that the declared
    length (or, for a deferred length, `max_size` or S3's 5 TiB object limit) fits in
    `max_parts` parts; rounded up to whole MiB (unless below one MiB: a test-only floor).
    """
    target = length if length is not None else (max_size or MAX_OBJECT_SIZE)
    target = min(target, MAX_OBJECT_SIZE)
    size = max(configured, min_part_size, -(-target // max_parts))
    if size > MIB:
        size = -(-size // MIB) * MIB
    return min(size, MAX_PART_SIZE)


def check_fits(length: int | None, part_size: int, max_parts: int) -> None:
    """413 for a declared length that `max_parts` parts of `part_size` cannot hold."""
    if length is None:
        return
    if length > MAX_OBJECT_SIZE:
        raise TusError(
            413, "upload-too-large", f"S3 objects cannot be larger than 5 TiB ({MAX_OBJECT_SIZE})"
        )
    if length > part_size * max_parts:
        raise TusError(
            413,
            "upload-too-large",
            f"Upload-Length {length} does not fit in the {max_parts} parts of at most "
            f"{part_size} bytes this S3 store may use (--s3-max-parts); the largest upload it "
            f"takes is {part_size * max_parts} bytes",
        )
