"""Real tus clients on the production setup: the S3 store behind two instances sharing Redis.

Every upload must land in the bucket as exactly one completed object (plus its `.info`), with no
multipart upload left open, and its SHA-256 must match through the server and straight from S3.
moto rejects non-final parts under 5 MiB, so a wrong split of the stream fails these tests.
tus-js-client's scenarios run on S3 with the other stores' in test_tus_js_client.py; these are
the ones only this setup has: tuspy, and a PATCH cut on one instance and resumed on the other.
"""

from __future__ import annotations

import httpx
import pytest
from tusclient.client import TusClient

from tests.support.servers import RedisServer, S3Server
from tests.support.socket_http import RawHTTP, patch_headers, raw_create
from tests.support.source_files import MakeFile
from tests.support.store_servers import S3Fleet, s3_fleet
from tests.support.tus_requests import TUS, download_sha256, stable_offset
from tests.support.tusd_process import StartTusd

MiB = 1024 * 1024

pytestmark = pytest.mark.e2e


@pytest.fixture
def fleet(tusd_factory: StartTusd, s3: S3Server, redis: RedisServer) -> S3Fleet:
    return s3_fleet(tusd_factory, s3, redis)


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
