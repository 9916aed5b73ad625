"""Forwarded headers count only with --behind-proxy, in the server process as uvicorn runs it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.tusd_process import TusdProcess

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}


@pytest.mark.parametrize(("flags", "scheme"), [((), "http"), (("--behind-proxy",), "https")])
def test_forwarded_headers_are_trusted_only_behind_a_proxy(
    tmp_path: Path, flags: tuple[str, ...], scheme: str
) -> None:
    server = TusdProcess(tmp_path, flags)
    try:
        created = httpx.post(
            server.endpoint, headers={"Tus-Resumable": "1.0.0", "Upload-Length": "1", **FORWARDED}
        )
        assert created.status_code == 201, created.text
        assert created.headers["Location"].startswith(f"{scheme}://127.0.0.1:")
    finally:
        server.stop()
