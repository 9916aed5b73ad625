"""The S3 limit: a direct multipart upload of a file with aiobotocore, no tus server between.

The same bytes, the same endpoint, the same part size and the same number of part uploads in
flight as the tusd-py S3 store, and the client settings the store uses (no CRC trailers). Prints
one JSON line: {"ok": true, "seconds": <CreateMultipartUpload to CompleteMultipartUpload>}.

    python -m benchmarks.s3_direct <endpoint> <bucket> <key> <file> <part size> <concurrency>
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session


async def upload(
    endpoint: str, bucket: str, key: str, path: str, part_size: int, concurrency: int
) -> float:
    config = AioConfig(
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        s3={"addressing_style": "path"},
        max_pool_connections=64,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    async with get_session().create_client("s3", endpoint_url=endpoint, config=config) as s3:
        size = os.path.getsize(path)  # noqa: ASYNC240 - before the clock starts
        count = max(1, -(-size // part_size))
        started = time.perf_counter()
        multipart = await s3.create_multipart_upload(Bucket=bucket, Key=key)
        upload_id = multipart["UploadId"]
        slots = asyncio.Semaphore(concurrency)
        etags: dict[int, str] = {}

        async def send(number: int, f: Any) -> None:
            async with slots:
                f.seek((number - 1) * part_size)
                body = f.read(part_size)  # read under the semaphore: bounded memory, like a server
                response = await s3.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                etags[number] = response["ETag"]

        # Blocking reads of the page cache on the loop: the cheapest way to feed the parts.
        with open(path, "rb") as f:  # noqa: ASYNC230
            await asyncio.gather(*(send(n, f) for n in range(1, count + 1)))
        parts = [{"PartNumber": n, "ETag": etags[n]} for n in range(1, count + 1)]
        await s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        return time.perf_counter() - started


def main() -> None:
    endpoint, bucket, key, path, part_size, concurrency = sys.argv[1:7]
    try:
        seconds = asyncio.run(upload(endpoint, bucket, key, path, int(part_size), int(concurrency)))
    except Exception as exc:  # reported, not raised: the driver counts it as an error
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        sys.exit(1)
    print(json.dumps({"ok": True, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
