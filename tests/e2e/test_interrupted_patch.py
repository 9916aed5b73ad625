"""A client that hangs up in the middle of a PATCH body loses nothing that reached the server.

The protocol says the server SHOULD store as much of an interrupted body as it can; this is what
makes a flaky connection cheap. A bare socket plays the client that vanishes.
"""

from __future__ import annotations

import pytest

from tests.support.socket_http import RawHTTP, patch_headers, raw_create
from tests.support.source_files import MakeFile
from tests.support.tus_requests import download_sha256, stable_offset
from tests.support.tusd_process import TusdProcess

MiB = 1024 * 1024

pytestmark = pytest.mark.e2e


def test_half_a_patch_body_is_kept_and_the_rest_completes_the_upload(
    tusd: TusdProcess, make_file: MakeFile
) -> None:
    source = make_file(4 * MiB)
    half = source.size // 2
    url = raw_create(tusd.endpoint, source.size)

    with RawHTTP(url) as conn:
        conn.send_head("PATCH", patch_headers(0, source.size))
        conn.send(source.data[:half])
    # The socket is closed with half the declared Content-Length sent.

    kept = stable_offset(url)
    assert 0 < kept <= half, f"after sending {half} of {source.size} bytes, HEAD says {kept}"

    rest = source.data[kept:]
    with RawHTTP(url) as conn:
        conn.send_head("PATCH", patch_headers(kept, len(rest)))
        conn.send(rest)
        response = conn.read_response()
    assert response.status == 204, f"PATCH at {kept}: {response}"
    assert response.headers["upload-offset"] == str(source.size)

    assert download_sha256(url) == (source.size, source.sha256)
