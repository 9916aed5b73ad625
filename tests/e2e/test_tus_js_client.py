"""tus-js-client (Node build) uploads files to the real server; the download must match.

Each test runs js/upload.mjs in a subprocess; it prints one JSON line with the upload URL and
every request it sent, so a failure names the request and the status that went wrong.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import MakeFile, SourceFile, download_sha256, head
from tests.e2e.tusd_process import TusdProcess

MiB = 1024 * 1024
JS_DIR = Path(__file__).parent / "js"
METADATA = {"filename": "söurce file.bin", "filetype": "application/octet-stream"}

pytestmark = pytest.mark.e2e


def upload_with_js(endpoint: str, source: SourceFile, **options: Any) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node is not on PATH; run `bash scripts/test`, which checks for it"
    assert (JS_DIR / "node_modules" / "tus-js-client").is_dir(), (
        f"tus-js-client is not installed in {JS_DIR}; run `bash scripts/test` (npm ci)"
    )
    options = {"endpoint": endpoint, "file": str(source.path), "metadata": METADATA, **options}
    done = subprocess.run(
        [node, str(JS_DIR / "upload.mjs"), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"upload.mjs printed nothing (exit {done.returncode}); stderr:\n{done.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert done.returncode == 0 and result["ok"], (
        "tus-js-client upload failed:\n"
        + json.dumps(result, indent=1, ensure_ascii=False)
        + f"\nstderr:\n{done.stderr}"
    )
    return result


def assert_stored(server: TusdProcess, url: str, source: SourceFile) -> None:
    assert url.startswith(server.endpoint), f"upload URL {url} is not under {server.endpoint}"
    response = head(url)
    assert response.status_code in (200, 204), f"HEAD {url}: {response.status_code}"
    assert response.headers["Upload-Offset"] == str(source.size)
    assert response.headers["Upload-Length"] == str(source.size)
    sent = {
        key: base64.b64encode(value.encode()).decode() for key, value in METADATA.items()
    }
    stored = dict(pair.split(" ", 1) for pair in response.headers["Upload-Metadata"].split(","))
    assert stored == sent
    assert download_sha256(url) == (source.size, source.sha256)


def requests_of(result: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [r for r in result["requests"] if r["method"] == method]


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
