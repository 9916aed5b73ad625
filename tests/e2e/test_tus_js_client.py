"""tus-js-client (Node build) uploads files to the real server on every store; the download must
match, and the store must hold the upload as one object (or blob, or file) and its `.info`.

Each test runs js/upload.mjs in a subprocess; it prints one JSON line with the upload URL and
every request it sent, so a failure names the request and the status that went wrong. The
`server` fixture runs each test on each store of tests/support/store_servers.py (ids `file`,
`s3`, `azure`, and `s3-tls`: S3 over HTTPS). On S3, moto rejects non-final parts under 5 MiB, so
a wrong split of the stream fails these tests; there the upload must also read back the same
through a second instance.
"""

from __future__ import annotations

import pytest

from tests.support.source_files import MakeFile
from tests.support.store_servers import S3_TLS, STORES, StoreServer, start_on
from tests.support.tus_js_client import assert_stored, requests_of, upload_with_js
from tests.support.tus_requests import head
from tests.support.tusd_process import StartTusd

MiB = 1024 * 1024

pytestmark = pytest.mark.e2e


# S3 over HTTPS too (moto with a certificate from the session's CA, verification on): the
# scenarios' read-backs are where a body broken off by TLS would show (issue 17).
@pytest.fixture(params=[*STORES, S3_TLS])
def server(request: pytest.FixtureRequest, tusd_factory: StartTusd) -> StoreServer:
    return start_on(request.param, request, tusd_factory)


@pytest.mark.parametrize("size", [20 * MiB, 20 * MiB + 3], ids=["20MiB", "20MiB+3"])
def test_whole_file_in_one_patch(server: StoreServer, make_file: MakeFile, size: int) -> None:
    source = make_file(size)
    result = upload_with_js(server.tusd.endpoint, source, chunkSize="Infinity")
    patches = requests_of(result, "PATCH")
    assert [p["bodyBytes"] for p in patches] == [source.size]
    assert all(p["status"] == 204 for p in patches)
    assert_stored(server.tusd, result["url"], source)
    server.assert_holds(result["url"], source)


@pytest.mark.parametrize(
    ("size", "chunk"),
    [(5 * MiB + 512 * 1024, MiB), (12 * MiB + 5, MiB), (17 * MiB, 5 * MiB + 1)],
    # On S3 every 1 MiB PATCH ends inside a part; 5 MiB + 1 ones end just past a part each.
    ids=["1MiB-chunks", "1MiB-chunks-12MiB+5", "5MiB+1-chunks"],
)
def test_chunks(server: StoreServer, make_file: MakeFile, size: int, chunk: int) -> None:
    source = make_file(size)
    result = upload_with_js(server.tusd.endpoint, source, chunkSize=chunk)
    patches = requests_of(result, "PATCH")
    whole, tail = divmod(size, chunk)
    assert [p["bodyBytes"] for p in patches] == [chunk] * whole + [tail] * bool(tail)
    assert [p["headers"]["Upload-Offset"] for p in patches] == [
        str(n * chunk) for n in range(1, whole + 1)
    ] + [str(source.size)] * bool(tail)
    assert all(p["status"] == 204 for p in patches)
    assert_stored(server.tusd, result["url"], source)
    server.assert_holds(result["url"], source)


@pytest.mark.parametrize(
    ("size", "chunk", "source_kind"),
    [
        (3 * MiB + 12345, MiB, "stream"),
        (2 * MiB, MiB, "buffer"),
        (11 * MiB + 1, 4 * MiB, "stream"),  # on S3 the last PATCH's tail is under 5 MiB
    ],
    ids=["stream-ragged-tail", "buffer-exact-multiple", "stream-long-tail"],
)
def test_deferred_length(
    server: StoreServer, make_file: MakeFile, size: int, chunk: int, source_kind: str
) -> None:
    # A stream of an exact multiple of chunkSize would hang tus-js-client 4.3.1 (its issue
    # #779), hence the Buffer source for that size.
    source = make_file(size)
    result = upload_with_js(
        server.tusd.endpoint,
        source,
        chunkSize=chunk,
        uploadLengthDeferred=True,
        deferredSource=source_kind,
    )
    (post,) = requests_of(result, "POST")
    assert post["status"] == 201
    patches = requests_of(result, "PATCH")
    assert [p.get("declaresLength") for p in patches] == [None] * (len(patches) - 1) + [size]
    assert all(p["status"] == 204 for p in patches)
    assert_stored(server.tusd, result["url"], source)
    server.assert_holds(result["url"], source)


def test_aborted_half_way_then_resumed_from_its_url(
    server: StoreServer, make_file: MakeFile
) -> None:
    source = make_file(8 * MiB)
    cut = 3 * MiB
    result = upload_with_js(server.tusd.endpoint, source, chunkSize="Infinity", abortAfterBytes=cut)
    # The server keeps what arrived before the connection dropped (on Azure: staged and
    # committed as a short block), so the client resumes from there rather than from zero.
    assert 0 < result["resumedFromOffset"] <= cut, result
    last_patch = requests_of(result, "PATCH")[-1]
    assert last_patch["bodyBytes"] == source.size - result["resumedFromOffset"]
    assert_stored(server.tusd, result["url"], source)
    server.assert_holds(result["url"], source)


@pytest.mark.parametrize("chunk", ["Infinity", MiB], ids=["all-in-post", "first-mib-in-post"])
def test_upload_data_during_creation(
    server: StoreServer, make_file: MakeFile, chunk: str | int
) -> None:
    source = make_file(2 * MiB + 777)
    result = upload_with_js(
        server.tusd.endpoint, source, chunkSize=chunk, uploadDataDuringCreation=True
    )
    (post,) = requests_of(result, "POST")
    assert post["status"] == 201
    expected_in_post = source.size if chunk == "Infinity" else MiB
    assert post["bodyBytes"] == expected_in_post
    assert post["headers"]["Upload-Offset"] == str(expected_in_post)
    assert_stored(server.tusd, result["url"], source)
    server.assert_holds(result["url"], source)


def test_override_patch_method(server: StoreServer, make_file: MakeFile) -> None:
    source = make_file(2 * MiB + 777)
    result = upload_with_js(server.tusd.endpoint, source, chunkSize=MiB, overridePatchMethod=True)
    assert requests_of(result, "PATCH") == []
    appends = [r for r in requests_of(result, "POST") if r.get("override") == "PATCH"]
    assert [a["bodyBytes"] for a in appends] == [MiB, MiB, 777]
    assert all(a["status"] == 204 for a in appends)
    assert_stored(server.tusd, result["url"], source)
    server.assert_holds(result["url"], source)


@pytest.mark.parametrize("size", [40 * MiB, 3 * MiB + 17], ids=["40MiB", "3MiB"])
def test_parallel_uploads_concatenate(server: StoreServer, make_file: MakeFile, size: int) -> None:
    source = make_file(size)
    result = upload_with_js(server.tusd.endpoint, source, parallelUploads=4)
    posts = requests_of(result, "POST")
    assert len(posts) == 5 and all(p["status"] == 201 for p in posts)
    assert_stored(server.tusd, result["url"], source)
    for post in posts[:4]:
        assert head(post["headers"]["Location"]).status_code == 404
    server.assert_holds(result["url"], source)
