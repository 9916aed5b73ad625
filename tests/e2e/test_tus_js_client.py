"""tus-js-client (Node build) uploads files to the real server; the download must match.

Each test runs js/upload.mjs in a subprocess; it prints one JSON line with the upload URL and
every request it sent, so a failure names the request and the status that went wrong.
"""

from __future__ import annotations

import pytest

from tests.support.source_files import MakeFile
from tests.support.tus_js_client import assert_stored, requests_of, upload_with_js
from tests.support.tusd_process import TusdProcess

MiB = 1024 * 1024

pytestmark = pytest.mark.e2e


def test_whole_file_in_one_patch(tusd: TusdProcess, make_file: MakeFile) -> None:
    source = make_file(20 * MiB)
    result = upload_with_js(tusd.endpoint, source, chunkSize="Infinity")
    patches = requests_of(result, "PATCH")
    assert [p["bodyBytes"] for p in patches] == [source.size]
    assert_stored(tusd, result["url"], source)


def test_chunks_of_one_mib(tusd: TusdProcess, make_file: MakeFile) -> None:
    source = make_file(5 * MiB + 512 * 1024)
    result = upload_with_js(tusd.endpoint, source, chunkSize=MiB)
    patches = requests_of(result, "PATCH")
    assert [p["bodyBytes"] for p in patches] == [MiB] * 5 + [512 * 1024]
    assert [p["headers"]["Upload-Offset"] for p in patches] == [
        str(n * MiB) for n in range(1, 6)
    ] + [str(source.size)]
    assert_stored(tusd, result["url"], source)


@pytest.mark.parametrize(
    ("size", "source_kind"),
    [(3 * MiB + 12345, "stream"), (2 * MiB, "buffer")],
    ids=["stream-ragged-tail", "buffer-exact-multiple"],
)
def test_deferred_length(
    tusd: TusdProcess, make_file: MakeFile, size: int, source_kind: str
) -> None:
    # A stream of an exact multiple of chunkSize would hang tus-js-client 4.3.1 (its issue
    # #779), hence the Buffer source for that size.
    source = make_file(size)
    result = upload_with_js(
        tusd.endpoint,
        source,
        chunkSize=MiB,
        uploadLengthDeferred=True,
        deferredSource=source_kind,
    )
    post, = requests_of(result, "POST")
    assert post["status"] == 201
    patches = requests_of(result, "PATCH")
    assert [p.get("declaresLength") for p in patches] == [None] * (len(patches) - 1) + [size]
    assert_stored(tusd, result["url"], source)


def test_aborted_half_way_then_resumed_from_its_url(tusd: TusdProcess, make_file: MakeFile) -> None:
    source = make_file(8 * MiB)
    cut = 3 * MiB
    result = upload_with_js(tusd.endpoint, source, chunkSize="Infinity", abortAfterBytes=cut)
    # The server keeps what arrived before the connection dropped, so the client resumes from
    # there rather than from zero.
    assert 0 < result["resumedFromOffset"] <= cut, result
    last_patch = requests_of(result, "PATCH")[-1]
    assert last_patch["bodyBytes"] == source.size - result["resumedFromOffset"]
    assert_stored(tusd, result["url"], source)


@pytest.mark.parametrize("chunk", ["Infinity", MiB], ids=["all-in-post", "first-mib-in-post"])
def test_upload_data_during_creation(
    tusd: TusdProcess, make_file: MakeFile, chunk: str | int
) -> None:
    source = make_file(2 * MiB + 777)
    result = upload_with_js(
        tusd.endpoint, source, chunkSize=chunk, uploadDataDuringCreation=True
    )
    post, = requests_of(result, "POST")
    assert post["status"] == 201
    expected_in_post = source.size if chunk == "Infinity" else MiB
    assert post["bodyBytes"] == expected_in_post
    assert post["headers"]["Upload-Offset"] == str(expected_in_post)
    assert_stored(tusd, result["url"], source)


def test_override_patch_method(tusd: TusdProcess, make_file: MakeFile) -> None:
    source = make_file(2 * MiB + 777)
    result = upload_with_js(tusd.endpoint, source, chunkSize=MiB, overridePatchMethod=True)
    assert requests_of(result, "PATCH") == []
    appends = [r for r in requests_of(result, "POST") if r.get("override") == "PATCH"]
    assert [a["bodyBytes"] for a in appends] == [MiB, MiB, 777]
    assert all(a["status"] == 204 for a in appends)
    assert_stored(tusd, result["url"], source)
