"""CPU cost of what vouches for each S3 part body: milliseconds of one core per MiB hashed.

What the store computes per part, by `--s3-checksum` and endpoint scheme (parts.PartDigest):
MD5 (Content-MD5, HTTPS without checksums), SHA-256 (the signed payload hash over plain HTTP;
with checksums on, the one hash that is both S3's checksum and the signed payload hash). CRC32C
is measured too when the optional `crc32c` package is importable (it is not a dependency).

    python -m benchmarks.part_hashing [--part-mib 8] [--rounds 20]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import platform
import ssl
import timeit
from collections.abc import Callable


def candidates() -> dict[str, Callable[[bytes], object]]:
    hashes: dict[str, Callable[[bytes], object]] = {
        "md5": lambda data: hashlib.md5(data, usedforsecurity=False).digest(),
        "sha256": lambda data: hashlib.sha256(data).digest(),
    }
    try:
        import crc32c  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        hashes["crc32c"] = lambda data: crc32c.crc32c(data)
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part-mib", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    data = os.urandom(args.part_mib * 1024 * 1024)
    flags = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            words = next(line for line in cpuinfo if line.startswith("flags")).split()
        flags = " ".join(f for f in ("sha_ni", "sse4_2", "avx2") if f in words)
    except (OSError, StopIteration):
        pass
    print(
        f"# {platform.machine()}, Python {platform.python_version()}, {ssl.OPENSSL_VERSION}; "
        f"CPU flags: {flags or 'unknown'}"
    )
    print(f"# {args.part_mib} MiB part, best of {args.rounds}")
    for name, function in candidates().items():
        best = min(timeit.repeat(functools.partial(function, data), number=1, repeat=args.rounds))
        per_mib = best * 1000 / args.part_mib
        print(f"{name:8} {per_mib:6.3f} ms/MiB  {args.part_mib / best / 1024:6.2f} GiB/s")


if __name__ == "__main__":
    main()
