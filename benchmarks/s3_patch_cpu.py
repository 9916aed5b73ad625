"""CPU of the S3 store per small PATCH, without HTTP, Node or the state store around it.

Sends `--patches` PATCHes of `--patch-size` (in 64 KiB chunks, as uvicorn hands them over) into
one upload of an `S3Store` with its tails in Redis and 8 MiB parts, in this process, against moto
and redis-server started as `benchmarks/run` starts them; the commit only moves the offset.
Prints one JSON line per run: {"cpu": process CPU seconds, worker threads included, "wall": ...}.
The process's CPU is what other load on the machine moves least, so two trees compare best by
running this against each, one after the other, several times (as a script, so that the tree
given, not the current directory, provides tusd_py):

    PYTHONPATH=<tree> python benchmarks/s3_patch_cpu.py --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from unittest import mock

import uvloop

from benchmarks.driver import MOTO_ENV, parse_size
from benchmarks.targets import S3_ENV
from tusd_py.info import UploadInfo
from tusd_py.redis_client import make_client
from tusd_py.stores.s3 import MIB, RedisTails, S3Store

CHUNK = 64 * 1024


async def one_run(endpoint: str, redis_url: str, bucket: str, patches: int, size: int) -> None:
    store = S3Store(bucket, endpoint=endpoint, part_size=8 * MIB)
    tails = RedisTails(make_client(redis_url, decode=False), "cpu" + uuid.uuid4().hex[:8])
    store.use_redis_tails(tails)
    await store.open()
    data = os.urandom(size)
    chunks = [data[i : i + CHUNK] for i in range(0, size, CHUNK)]
    info = UploadInfo(id=uuid.uuid4().hex, length=(patches + 1) * size)  # never finished
    info.expires_at = time.time() + 3600
    await store.create(info)

    async def commit(offset: int) -> None:
        info.offset = offset

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(patches):
        info.offset = await store.write(info, body(), commit)
    await store.parts.settle(info.id)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await store.terminate(info)
    await store.close()
    print(json.dumps({"cpu": round(cpu, 3), "wall": round(wall, 3)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    from tests.support.servers import redis_server, s3_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--patch-size", default="1MiB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, S3_ENV))  # the store's credentials
        s3 = stack.enter_context(s3_server(MOTO_ENV))
        redis = stack.enter_context(redis_server())
        import botocore.session

        botocore.session.get_session().create_client(
            "s3", endpoint_url=s3.endpoint, region_name=S3_ENV["AWS_DEFAULT_REGION"]
        ).create_bucket(Bucket="cpu")
        for _ in range(args.runs):
            run = one_run(s3.endpoint, redis.url, "cpu", args.patches, parse_size(args.patch_size))
            uvloop.run(run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
