"""Server arguments for the storage and state a scenario runs on, and payloads to upload."""

from __future__ import annotations

import random

from tests.support.servers import S3_ENV, RedisServer, unique_prefix

MiB = 1024 * 1024
KiB = 1024

# Short leases and waits, so that a killed holder's lock frees within seconds; the defaults
# (15 s lease, 10 s acquire timeout) behave the same, only slower.
FAST_LOCKS = ("--lock-lease", "2s", "--lock-acquire-timeout", "5s")


def redis_args(redis: RedisServer) -> tuple[str, ...]:
    return ("--redis-url", redis.url, "--redis-prefix", unique_prefix())


def s3_args(bucket: str, endpoint: str, part_size: str = "5MiB") -> tuple[str, ...]:
    return (
        "--s3-bucket", bucket,
        "--s3-endpoint", endpoint,
        "--s3-region", S3_ENV["AWS_DEFAULT_REGION"],
        "--s3-part-size", part_size,
    )  # fmt: skip


def random_size(rng: random.Random, largest: int) -> int:
    """0 B now and then, small sizes often, anything up to `largest` most of the time."""
    roll = rng.random()
    if roll < 0.08:
        return 0
    if roll < 0.25:
        return rng.randint(1, 64 * KiB)
    return rng.randint(1, largest)


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)
