"""--cors-origins on a real server process: entries normalised, a non-origin refused at start,
refused preflights and origins logged once per origin per interval."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.tus_requests import wait_until
from tests.support.tusd_process import TusdProcess


def preflight(endpoint: str, origin: str) -> httpx.Response:
    return httpx.options(
        endpoint,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "tus-resumable, upload-length",
        },
    )


def test_an_entry_with_a_path_is_one_line_and_status_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tusd_py", "--port", "0", "--cors-origins", "https://a.example/app"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tusd-py: error: 'https://a.example/app' in --cors-origins is not")
    assert "Traceback" not in done.stderr and "listening" not in done.stdout


def test_a_trailing_slash_and_capitals_still_match_and_refusals_are_logged_once(
    tmp_path: Path,
) -> None:
    server = TusdProcess(tmp_path, ("--cors-origins", "https://App.example/,http://b.example"))
    try:
        allowed = preflight(server.endpoint, "https://app.example")
        assert allowed.status_code == 200
        assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
        for _ in range(5):
            assert preflight(server.endpoint, "https://evil.example").status_code == 400
        simple = httpx.head(
            server.endpoint + "0" * 32,
            headers={"Tus-Resumable": "1.0.0", "Origin": "https://other.example"},
        )
        assert "Access-Control-Allow-Origin" not in simple.headers

        def warnings() -> list[str]:
            return [line for line in server.lines if "WARNING tusd_py.cors" in line]

        wait_until(lambda: len(warnings()) >= 2, timeout=5)
    finally:
        server.stop()
    refused_preflight, refused_origin = warnings()
    assert "refused a CORS preflight from origin 'https://evil.example'" in refused_preflight
    assert "Disallowed CORS origin" in refused_preflight
    assert "allowed origins: https://app.example, http://b.example" in refused_preflight
    assert "origin 'https://other.example' gets no CORS headers" in refused_origin
