"""The three set-ups of the load-and-abuse suite, as real server processes: the file store; the
file store with Redis state; S3 (moto) with Redis state. Each knows what it has stored, so a test
can say "nothing left behind" across the disk, the bucket and Redis at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_py

from tests.reliability.backends import s3_args
from tests.support.s3_client import bucket_keys, new_bucket
from tests.support.servers import RedisServer, S3Server, unique_prefix
from tests.support.tusd_process import TusdProcess

SETUPS = ["file", "file+redis", "s3+redis"]


@dataclass
class Setup:
    name: str
    upload_dir: Path
    redis: RedisServer | None = None
    s3: S3Server | None = None
    prefix: str = field(default_factory=unique_prefix)
    bucket: str | None = None

    @property
    def args(self) -> tuple[str, ...]:
        args: tuple[str, ...] = ()
        if self.redis is not None:
            args += ("--redis-url", self.redis.url, "--redis-prefix", self.prefix)
        if self.s3 is not None:
            if self.bucket is None:
                self.bucket = new_bucket(self.s3, "load")
            args += s3_args(self.bucket, self.s3.endpoint)
        return args

    @contextlib.contextmanager
    def server(self, *extra: str) -> Iterator[TusdProcess]:
        process = TusdProcess(self.upload_dir, (*self.args, *extra))
        try:
            yield process
        finally:
            process.stop()
            tail = process.output.splitlines()[-40:]
            print(f"=== {self.name}: last {len(tail)} lines of output ===", *tail, sep="\n")

    def redis_client(self) -> redis_py.Redis:
        assert self.redis is not None
        return redis_py.Redis.from_url(self.redis.url)

    def redis_keys(self) -> set[str]:
        if self.redis is None:
            return set()
        with self.redis_client() as client:
            return {k.decode() for k in client.scan_iter(match=f"{self.prefix}:*", count=1000)}

    def stored(self) -> set[str]:
        """Every file, object and Redis key this set-up's server has left."""
        names = {f"redis:{key}" for key in self.redis_keys()}
        if self.upload_dir.exists():
            names |= {
                f"file:{p.relative_to(self.upload_dir)}"
                for p in self.upload_dir.rglob("*")
                if p.is_file()
            }
        if self.s3 is not None and self.bucket is not None:
            names |= {f"s3:{key}" for key in bucket_keys(self.s3, self.bucket)}
        return names


def make_setup(name: str, tmp_path: Path, redis: RedisServer, s3: S3Server) -> Setup:
    return Setup(
        name,
        tmp_path / "uploads",
        redis=redis if "redis" in name else None,
        s3=s3 if name.startswith("s3") else None,
    )


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
