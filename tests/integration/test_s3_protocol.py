"""tus over HTTP onto S3 (moto): the app in-process, then the real CLI server with a 200 MiB PATCH.

The protocol suite (tests/protocol) already covers every rule on the S3 backends; these tests
follow whole uploads through `create_app(Config(s3_bucket=...))` and check what lands in the
bucket and what each request costs in S3 calls.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.in_process import app_client, store_of
from tests.support.payloads import payload
from tests.support.s3_client import bucket_keys
from tests.support.servers import S3Server
from tests.support.tusd_process import TusdProcess
from tusd_py.config import Config
from tusd_py.stores.s3 import MIB, S3Store

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


@pytest.fixture
async def tus(s3: S3Server, bucket: str) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(
        s3_bucket=bucket, s3_endpoint=s3.endpoint, s3_region="us-east-1", s3_part_size=5 * MIB
    )
    async with app_client(config) as client:
        yield client


async def create(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    metadata = "filename " + base64.b64encode(b"data.bin").decode()
    response = await client.post("/files/", headers={**TUS, "Upload-Metadata": metadata, **headers})
    assert response.status_code == 201, response.text
    return response.headers["Location"]


async def patch_in_chunks(
    client: httpx.AsyncClient, url: str, data: bytes, chunk: int
) -> list[dict[str, int]]:
    """PATCH `data` in `chunk`-sized requests; returns the S3 calls each one cost."""
    store = store_of(client, S3Store)
    costs = []
    for offset in range(0, len(data), chunk):
        before = Counter(store.request_counts)
        body = data[offset : offset + chunk]
        response = await client.patch(
            url, headers={**OCTETS, "Upload-Offset": str(offset)}, content=body
        )
        assert response.status_code == 204, response.text
        assert response.headers["Upload-Offset"] == str(offset + len(body))
        await store.parts.settle(url.rsplit("/", 1)[-1])  # count a background part upload here
        costs.append({k: v - before[k] for k, v in store.request_counts.items() if v != before[k]})
    return costs


async def test_upload_in_1mib_patches_head_download_delete(
    tus: httpx.AsyncClient, s3: S3Server, bucket: str
) -> None:
    data = payload(11 * MIB + 4321)
    url = await create(tus, {"Upload-Length": str(len(data))})
    upload_id = url.rsplit("/", 1)[-1]

    costs = await patch_in_chunks(tus, url, data, MIB)
    print("S3 calls per 1 MiB PATCH (local state: +1 PUT .info per commit):", costs)
    # Inside a part: PUT of a segment + PUT `.info`; the head comes from this instance's cache.
    assert costs[1] == {"put_object": 2}
    # The PATCH that fills part 1 exactly: its segment + PUT `.info`; part 1's UploadPart runs in
    # the background.
    assert costs[4] == {"upload_part": 1, "put_object": 2}

    head = await tus.head(url, headers=TUS)
    assert head.status_code in (200, 204)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))

    download = await tus.get(url, headers=TUS)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == hashlib.sha256(data).hexdigest()
    ranged = await tus.get(url, headers={**TUS, "Range": "bytes=5242870-5242899"})
    assert ranged.status_code == 206 and ranged.content == data[5242870:5242900]
    assert bucket_keys(s3, bucket) == [upload_id, f"{upload_id}.info"]

    deleted = await tus.delete(url, headers=TUS)
    assert deleted.status_code == 204
    assert (await tus.head(url, headers=TUS)).status_code in (404, 410)
    assert bucket_keys(s3, bucket) == []


async def test_deferred_length_declared_by_an_empty_last_patch(
    tus: httpx.AsyncClient, s3: S3Server, bucket: str
) -> None:
    """The last data PATCH leaves a tail in segments; the length comes afterwards without a body."""
    data = payload(7 * MIB + 99, seed=9)
    url = await create(tus, {"Upload-Defer-Length": "1"})
    await patch_in_chunks(tus, url, data, 3 * MIB)
    head = await tus.head(url, headers=TUS)
    assert head.headers["Upload-Defer-Length"] == "1"
    assert head.headers["Upload-Offset"] == str(len(data))

    final = await tus.patch(
        url,
        headers={**OCTETS, "Upload-Offset": str(len(data)), "Upload-Length": str(len(data))},
        content=b"",
    )
    assert final.status_code == 204, final.text
    download = await tus.get(url, headers=TUS)
    assert hashlib.sha256(download.content).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_creation_with_upload_and_zero_length(
    tus: httpx.AsyncClient, s3: S3Server, bucket: str
) -> None:
    data = payload(6 * MIB, seed=2)
    response = await tus.post(
        "/files/",
        headers={**OCTETS, "Upload-Length": str(len(data) + 10)},
        content=data,
    )
    assert response.status_code == 201 and response.headers["Upload-Offset"] == str(len(data))
    url = response.headers["Location"]
    last = await tus.patch(
        url, headers={**OCTETS, "Upload-Offset": str(len(data))}, content=b"0123456789"
    )
    assert last.status_code == 204
    assert (await tus.get(url, headers=TUS)).content == data + b"0123456789"

    empty = await create(tus, {"Upload-Length": "0"})
    got = await tus.get(empty, headers=TUS)
    assert got.status_code == 200 and got.content == b""


# -- the CLI server, one 200 MiB PATCH -------------------------------------------------------

BIG = int(os.environ.get("TUSD_TEST_BIG_MIB", "200")) * MIB  # bigger runs show RSS stays flat


def vm_hwm_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match[1])


def pattern_body(size: int, chunk: int = MIB) -> Iterator[bytes]:
    block = random.Random(11).randbytes(chunk)
    for offset in range(0, size, chunk):
        # Vary each block so a misplaced part changes the hash.
        yield (offset // chunk).to_bytes(8, "big") + block[8 : min(chunk, size - offset)]


def test_200mib_single_patch_through_the_cli_server(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    server = TusdProcess(
        tmp_path,
        ("--s3-bucket", bucket, "--s3-endpoint", s3.endpoint, "--s3-region", "us-east-1"),
    )
    try:
        idle_kib = vm_hwm_kib(server.proc.pid)
        expected = hashlib.sha256()
        for block in pattern_body(BIG):
            expected.update(block)
        with httpx.Client(timeout=120) as client:
            created = client.post(server.endpoint, headers={**TUS, "Upload-Length": str(BIG)})
            assert created.status_code == 201, created.text
            url = httpx.URL(server.endpoint).join(created.headers["Location"])
            started = time.monotonic()
            response = client.patch(
                url,
                headers={**OCTETS, "Upload-Offset": "0", "Content-Length": str(BIG)},
                content=pattern_body(BIG),
            )
            seconds = time.monotonic() - started
            assert response.status_code == 204, response.text
            assert response.headers["Upload-Offset"] == str(BIG)
            peak_kib = vm_hwm_kib(server.proc.pid)

            got = hashlib.sha256()
            with client.stream("GET", url, headers=TUS) as download:
                assert download.status_code == 200
                for piece in download.iter_bytes():
                    got.update(piece)
        assert got.hexdigest() == expected.hexdigest()
        growth_mib = (peak_kib - idle_kib) / 1024
        print(
            f"\n{BIG // MIB} MiB in one PATCH through the CLI server: {seconds:.1f}s "
            f"({BIG / MIB / seconds:.0f} MiB/s to moto); server VmHWM {peak_kib / 1024:.0f} MiB "
            f"(after start {idle_kib / 1024:.0f} MiB, growth {growth_mib:.0f} MiB; "
            "buffer budget 64 MiB)"
        )
        # Bounded by the 64 MiB buffer budget plus interpreter/HTTP overhead, whatever BIG is.
        assert growth_mib < 64 + 64
    finally:
        server.stop()
