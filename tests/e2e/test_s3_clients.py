"""Real tus clients on the production setup: the S3 store behind two instances sharing Redis.

Every upload must land in the bucket as exactly one completed object (plus its `.info`), with no
multipart upload left open, and its SHA-256 must match through the server and straight from S3.
moto rejects non-final parts under 5 MiB, so a wrong split of the stream fails these tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tusclient.client import TusClient

from tests.support.s3_client import new_bucket, s3_client
from tests.support.servers import RedisServer, S3Server
from tests.support.socket_http import RawHTTP, patch_headers, raw_create
from tests.support.source_files import MakeFile, SourceFile
from tests.support.tus_js_client import assert_stored, requests_of, upload_with_js
from tests.support.tus_requests import TUS, download_sha256, stable_offset
from tests.support.tusd_process import StartTusd, TusdProcess

MiB = 1024 * 1024
# A stream source: the length is declared on the last PATCH, whose tail is under 5 MiB.
DEFERRED_STREAM = {"uploadLengthDeferred": True, "deferredSource": "stream"}

pytestmark = pytest.mark.e2e


@dataclass
class S3Fleet:
    a: TusdProcess
    b: TusdProcess
    bucket: str
    s3: Any  # tests.support.s3_client

    def assert_one_object(self, upload_url: str, source: SourceFile) -> None:
        upload_id = upload_url.rstrip("/").rsplit("/", 1)[-1]
        s3 = self.s3
        listing = s3.list_objects_v2(Bucket=self.bucket)
        keys = sorted(o["Key"] for o in listing.get("Contents", []))
        assert keys == [upload_id, upload_id + ".info"], keys
        open_uploads = s3.list_multipart_uploads(Bucket=self.bucket)
        assert open_uploads.get("Uploads", []) == []
        body = s3.get_object(Bucket=self.bucket, Key=upload_id)["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (source.size, source.sha256)


@pytest.fixture
def fleet(tusd_factory: StartTusd, s3: S3Server, redis: RedisServer) -> S3Fleet:
    bucket = new_bucket(s3, "e2e-")
    args = (
        "--s3-bucket", bucket, "--s3-endpoint", s3.endpoint,
        "--redis-url", redis.url, "--redis-prefix", f"e2e-{bucket}",
    )  # fmt: skip
    return S3Fleet(tusd_factory(*args), tusd_factory(*args), bucket, s3_client(s3))


@pytest.mark.parametrize(
    ("size", "options"),
    [
        (20 * MiB + 3, {"chunkSize": "Infinity"}),
        (12 * MiB + 5, {"chunkSize": MiB}),  # every PATCH ends inside a part
        (17 * MiB, {"chunkSize": 5 * MiB + 1}),
        (
            3 * MiB + 12345,
            {"chunkSize": MiB, "uploadLengthDeferred": True, "deferredSource": "stream"},
        ),
        (
            11 * MiB + 1,
            {"chunkSize": 4 * MiB, "uploadLengthDeferred": True, "deferredSource": "stream"},
        ),
    ],
    ids=["one-patch", "1MiB-chunks", "5MiB+1-chunks", "deferred-short", "deferred-long-tail"],
)
def test_tus_js_client_on_s3(
    fleet: S3Fleet, make_file: MakeFile, size: int, options: dict[str, object]
) -> None:
    source = make_file(size)
    result = upload_with_js(fleet.a.endpoint, source, **options)
    assert all(p["status"] == 204 for p in requests_of(result, "PATCH"))
    assert_stored(fleet.a, result["url"], source)
    # The other instance knows the upload too: state is in Redis, bytes in the bucket.
    assert download_sha256(fleet.b.url_for(result["url"])) == (source.size, source.sha256)
    fleet.assert_one_object(result["url"], source)


def test_tuspy_on_s3(fleet: S3Fleet, make_file: MakeFile) -> None:
    source = make_file(6 * MiB + 4321)
    with source.path.open("rb") as stream:
        uploader = TusClient(fleet.a.endpoint).uploader(
            file_stream=stream, chunk_size=MiB, metadata={"filename": "a.bin"}
        )
        uploader.upload()
    assert uploader.url is not None
    assert download_sha256(uploader.url) == (source.size, source.sha256)
    fleet.assert_one_object(uploader.url, source)


def test_patch_cut_mid_part_resumes_through_the_other_instance(
    fleet: S3Fleet, make_file: MakeFile
) -> None:
    """A client vanishes 10.5 MiB into a PATCH on A (inside the second 8 MiB part) and resumes
    on B: B continues from what A committed, the partial part included."""
    source = make_file(20 * MiB + 7)
    url_a = raw_create(fleet.a.endpoint, source.size)
    cut = 10 * MiB + 512 * 1024
    with RawHTTP(url_a) as conn:
        conn.send_head("PATCH", patch_headers(0, source.size))
        conn.send(source.data[:cut])

    url_b = fleet.b.url_for(url_a)
    kept = stable_offset(url_b, timeout=30)
    assert 0 < kept <= cut, f"after {cut} bytes sent to A, B reports {kept}"
    response = httpx.patch(
        url_b,
        headers={
            **TUS,
            "Upload-Offset": str(kept),
            "Content-Type": "application/offset+octet-stream",
        },
        content=source.data[kept:],
        timeout=60,
    )
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(source.size)
    assert download_sha256(url_a) == (source.size, source.sha256)
    fleet.assert_one_object(url_a, source)
