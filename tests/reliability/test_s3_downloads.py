"""Downloads whose S3 body breaks off mid-stream (issue 17), on a real server process.

The fault proxy sits between the server and moto and cuts GetObject bodies short. A download must
continue with a ranged GetObject from the byte it reached, so the client gets one whole response;
when S3 brings nothing more, the server closes the connection (the client sees a body shorter
than its Content-Length) and logs one line saying why, with no ASGI traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.backends import MiB, payload, s3_args
from tests.reliability.faults import proxy_thread
from tests.support.fault_proxy import CUT, FaultProxy, Request
from tests.support.s3_client import new_bucket
from tests.support.servers import S3Server
from tests.support.tus_requests import TUS, upload_whole
from tests.support.tusd_process import TusdProcess

SIZE = 20 * MiB + 5


class CutObjectReads:
    """Cuts GetObject bodies of the uploads' objects (not of their `.info`) while `on`: the
    first `cut_first` of them after `cut_bytes`, every later one before its first byte."""

    def __init__(self, cut_first: int, cut_bytes: int) -> None:
        self.on = False
        self.cut_first = cut_first
        self.cut_bytes = cut_bytes
        self.reads = 0
        self.proxy: FaultProxy | None = None

    def __call__(self, request: Request) -> str | None:
        path = request.target.split("?")[0]
        if not self.on or request.method != "GET" or path.endswith(".info"):
            return None
        self.reads += 1
        assert self.proxy is not None
        # Read by the proxy right after this returns, before it serves another request.
        self.proxy.cut_bytes = self.cut_bytes if self.reads <= self.cut_first else 0
        return CUT


@contextlib.contextmanager
def server_behind_cuts(
    s3: S3Server, tmp_path: Path, decide: CutObjectReads
) -> Iterator[TusdProcess]:
    bucket = new_bucket(s3, "cut")
    with proxy_thread(s3.port, decide) as proxy:
        decide.proxy = proxy
        tusd = TusdProcess(tmp_path / "uploads", s3_args(bucket, proxy.endpoint))
        try:
            yield tusd
        finally:
            tusd.stop()
            print("--- server output\n" + tusd.output)


@pytest.mark.parametrize("ranged", [False, True], ids=["whole", "range"])
def test_a_body_cut_mid_stream_is_continued_and_the_client_gets_every_byte(
    s3: S3Server, tmp_path: Path, ranged: bool
) -> None:
    data = payload(17, SIZE)
    decide = CutObjectReads(cut_first=10**6, cut_bytes=3 * MiB + 11)
    with server_behind_cuts(s3, tmp_path, decide) as tusd:
        url = upload_whole(tusd.endpoint, data, timeout=120)
        decide.on = True
        start = 1234 if ranged else 0
        headers = {**TUS, "Range": f"bytes={start}-"} if ranged else TUS
        with httpx.stream("GET", url, headers=headers, timeout=120) as response:
            assert response.status_code == (206 if ranged else 200)
            body = response.read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data[start:]).hexdigest()
        # Each GetObject brought 3 MiB + 11 before its cut: the download took several.
        assert decide.reads >= (SIZE - start) // (3 * MiB + 11)
        assert "broke off at byte" in tusd.output
        assert "Traceback" not in tusd.output


def test_a_body_that_cannot_be_continued_closes_the_connection_with_one_log_line(
    s3: S3Server, tmp_path: Path
) -> None:
    data = payload(18, SIZE)
    decide = CutObjectReads(cut_first=1, cut_bytes=2 * MiB)
    with server_behind_cuts(s3, tmp_path, decide) as tusd:
        url = upload_whole(tusd.endpoint, data, timeout=120)
        decide.on = True
        received = 0
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream("GET", url, headers=TUS, timeout=120) as response,
        ):
            assert response.status_code == 200
            assert response.headers["Content-Length"] == str(SIZE)
            for chunk in response.iter_bytes():
                received += len(chunk)
        assert received < SIZE
        # The server still answers on new connections.
        assert httpx.head(url, headers=TUS, timeout=30).status_code == 200
    failures = [line for line in tusd.output.splitlines() if "broke off mid-body" in line]
    assert len(failures) == 1, tusd.output
    assert "GetObject" in failures[0]
    assert "Traceback" not in tusd.output
    assert "Exception in ASGI application" not in tusd.output
    assert "without completing response" not in tusd.output
