"""Real clients on the protocol extensions: tus-js-client's parallelUploads (concatenation) and
IETF-draft protocols, tuspy's Upload-Checksum; each download must match by SHA-256."""

from __future__ import annotations

import base64
import hashlib
import time

import httpx
import pytest
from tusclient.client import TusClient

from tests.support.s3_client import new_bucket, s3_client
from tests.support.servers import S3Server
from tests.support.socket_http import RawHTTP, patch_headers, raw_create
from tests.support.source_files import MakeFile
from tests.support.tus_js_client import assert_stored, requests_of, upload_with_js
from tests.support.tus_requests import TUS, download_sha256, head, stable_offset, wait_until
from tests.support.tusd_process import StartTusd, TusdProcess

MiB = 1024 * 1024

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("size", [40 * MiB, 3 * MiB + 17], ids=["40MiB", "3MiB"])
def test_parallel_uploads_concatenate(tusd: TusdProcess, make_file: MakeFile, size: int) -> None:
    source = make_file(size)
    result = upload_with_js(tusd.endpoint, source, parallelUploads=4)
    posts = requests_of(result, "POST")
    assert len(posts) == 5, posts  # four partials and the final
    assert all(p["status"] == 201 for p in posts)
    partial_urls = [p["headers"]["Location"] for p in posts[:4]]
    assert_stored(tusd, result["url"], source)
    # The partials went into the final and were deleted (docs/protocol.md, cleanup policy).
    for url in partial_urls:
        assert head(url).status_code == 404


@pytest.mark.parametrize("size", [40 * MiB, 3 * MiB + 17], ids=["40MiB", "3MiB"])
def test_parallel_uploads_concatenate_on_s3(
    tusd_factory: StartTusd, s3: S3Server, make_file: MakeFile, size: int
) -> None:
    """Partials of 10 MiB (copied by S3) and of under 1 MiB (gathered into one part)."""
    bucket = new_bucket(s3, "e2e-")
    server = tusd_factory("--s3-bucket", bucket, "--s3-endpoint", s3.endpoint)
    source = make_file(size)
    result = upload_with_js(server.endpoint, source, parallelUploads=4)
    assert len(requests_of(result, "POST")) == 5
    assert_stored(server, result["url"], source)
    objects = s3_client(s3).list_objects_v2(Bucket=bucket)
    final_id = result["url"].rsplit("/", 1)[1]
    assert sorted(o["Key"] for o in objects["Contents"]) == [final_id, final_id + ".info"]


@pytest.mark.parametrize("protocol", ["ietf-draft-03", "ietf-draft-05"])
def test_ietf_draft_protocols(tusd: TusdProcess, make_file: MakeFile, protocol: str) -> None:
    source = make_file(6 * MiB + 321)
    result = upload_with_js(tusd.endpoint, source, protocol=protocol, chunkSize=2 * MiB)
    patches = requests_of(result, "PATCH")
    assert [p["bodyBytes"] for p in patches] == [2 * MiB, 2 * MiB, 2 * MiB, 321]
    assert all(200 <= p["status"] < 300 for p in patches)
    assert_stored(tusd, result["url"], source)


@pytest.mark.parametrize("protocol", ["ietf-draft-03", "ietf-draft-05"])
def test_ietf_draft_interrupted_and_resumed(
    tusd: TusdProcess, make_file: MakeFile, protocol: str
) -> None:
    source = make_file(8 * MiB)
    cut = 3 * MiB
    result = upload_with_js(tusd.endpoint, source, protocol=protocol, abortAfterBytes=cut)
    assert 0 < result["resumedFromOffset"] <= cut, result
    last_patch = requests_of(result, "PATCH")[-1]
    assert last_patch["bodyBytes"] == source.size - result["resumedFromOffset"]
    assert_stored(tusd, result["url"], source)


def test_tuspy_with_upload_checksum(tusd: TusdProcess, make_file: MakeFile) -> None:
    source = make_file(3 * MiB + 4321)
    # Our own stream: with upload_checksum tuspy opens the path per chunk and never closes it.
    with source.path.open("rb") as stream:
        uploader = TusClient(tusd.endpoint).uploader(
            file_stream=stream, chunk_size=MiB, upload_checksum=True, metadata={"name": "c"}
        )
        uploader.upload()
    assert uploader.url is not None

    # The access log line of a request is written after its response went out.
    def patches() -> list[str]:
        return [line for line in tusd.lines if "PATCH /files/" in line]

    assert wait_until(lambda: len(patches()) == 4, timeout=5), patches()
    assert all(" 204 " in line for line in patches()), patches()
    assert head(uploader.url).headers["Upload-Offset"] == str(source.size)
    assert download_sha256(uploader.url) == (source.size, source.sha256)


def test_checksum_mismatch_through_uvicorn_is_460(tusd: TusdProcess) -> None:
    created = httpx.post(tusd.endpoint, headers={**TUS, "Upload-Length": "5"})
    url = created.headers["Location"]
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    headers = {k: str(v) for k, v in patch_headers(0, 5).items()}
    response = httpx.patch(
        url, headers={**headers, "Upload-Checksum": f"sha1 {wrong}"}, content=b"hello"
    )
    assert response.status_code == 460, response.text
    assert head(url).headers["Upload-Offset"] == "0"


def test_checksummed_patch_cut_short_commits_nothing(tusd: TusdProcess) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    url = raw_create(tusd.endpoint, len(data))
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    with RawHTTP(url) as conn:
        conn.send_head(
            "PATCH", {**patch_headers(0, len(data)), "Upload-Checksum": f"sha256 {digest}"}
        )
        conn.send(data[: len(data) // 2])
    # Without a checksum the half would be kept; with one it cannot be verified, so it is not.
    assert stable_offset(url) == 0


def test_checksum_trailer_is_refused(tusd: TusdProcess) -> None:
    """checksum-trailer is not offered (docs/protocol.md): uvicorn cannot hand request trailers
    to the app reliably, so a PATCH announcing one is refused before any byte is stored."""
    data = b"trailer test"
    url = raw_create(tusd.endpoint, len(data))
    good = base64.b64encode(hashlib.sha1(data).digest()).decode()
    headers = {k: v for k, v in patch_headers(0, len(data)).items() if k != "Content-Length"}
    with RawHTTP(url) as conn:
        conn.send_head(
            "PATCH", {**headers, "Transfer-Encoding": "chunked", "Trailer": "Upload-Checksum"}
        )
        conn.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        conn.send(f"0\r\nUpload-Checksum: sha1 {good}\r\n\r\n".encode())
        response = conn.read_response()
    assert response.status == 400, response
    assert b"trailer" in response.body
    assert head(url).headers["Upload-Offset"] == "0"
    assert "checksum-trailer" not in httpx.options(tusd.endpoint).headers["Tus-Extension"]


def _complete_field(version: int, done: bool) -> dict[str, str]:
    if version == 3:
        return {"Upload-Incomplete": "?0" if done else "?1"}
    return {"Upload-Complete": "?1" if done else "?0"}


@pytest.mark.parametrize("version", [3, 4, 5, 6, 7, 8, 9])
def test_ietf_raw_http_interrupted_append(tusd: TusdProcess, version: int) -> None:
    """Every interop version through uvicorn: create, a PATCH cut off half way, offset
    retrieval (from 9 by GET as well), the completing PATCH; the download matches."""
    data = bytes(range(256)) * 8192  # 2 MiB
    interop = {"Upload-Draft-Interop-Version": str(version)}
    created = httpx.post(
        tusd.endpoint,
        headers={**interop, **_complete_field(version, False), "Upload-Length": str(len(data))},
    )
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    media = {"Content-Type": "application/partial-upload"} if version >= 6 else {}
    with RawHTTP(url) as conn:
        conn.send_head(
            "PATCH",
            {
                **interop,
                **media,
                **_complete_field(version, True),
                "Upload-Offset": 0,
                "Content-Length": len(data),
            },
        )
        conn.send(data[: MiB // 2])
    offset = 0
    for _ in range(100):  # the server keeps what arrived; wait until it has committed it
        state = httpx.head(url, headers=interop)
        assert state.status_code == 204
        offset = int(state.headers["Upload-Offset"])
        if offset:
            break
        time.sleep(0.05)
    assert 0 < offset <= MiB // 2
    assert state.headers["Upload-Length"] == str(len(data))
    if version >= 9:
        by_get = httpx.get(url, headers=interop)
        assert (by_get.status_code, by_get.content) == (204, b"")
        assert by_get.headers["Upload-Offset"] == str(offset)
        assert by_get.headers["Cache-Control"] == "no-store"
    assert state.headers["Upload-Incomplete" if version == 3 else "Upload-Complete"] == (
        "?1" if version == 3 else "?0"
    )
    done = httpx.patch(
        url,
        headers={
            **interop,
            **media,
            **_complete_field(version, True),
            "Upload-Offset": str(offset),
        },
        content=data[offset:],
    )
    assert done.status_code == (201 if version <= 6 else 204), done.text
    assert done.headers["Upload-Offset"] == str(len(data))
    assert download_sha256(url) == (len(data), hashlib.sha256(data).hexdigest())
