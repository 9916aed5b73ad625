"""What an operator reads in the log of a real server process when things fail.

Every request answered 5xx gives exactly one error line naming the upload, the request id, the
operation that failed and its cause (a read-only upload directory, a stopped moto, a stopped
redis-server); with `--log-format json` every line parses and carries those fields. A PATCH
whose client went away says so on its access line, with the bytes received and the offset
committed; `--log-level debug` still writes one access line per request.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.mounts import remount_read_only, small_disk
from tests.support.processes import stop_process
from tests.support.s3_client import new_bucket
from tests.support.servers import S3_ENV, redis_server, s3_server, unique_prefix
from tests.support.socket_http import RawHTTP, patch_headers
from tests.support.tus_requests import TUS, stable_offset, wait_until
from tests.support.tusd_process import LISTENING, TusdProcess

MiB = 1024 * 1024


def create(endpoint: str, length: int, request_id: str | None = None) -> httpx.Response:
    headers = {**TUS, "Upload-Length": str(length)}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return httpx.post(endpoint, headers=headers, timeout=60)


def patch(url: str, data: bytes, request_id: str) -> httpx.Response:
    headers = {
        **TUS,
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
        "X-Request-ID": request_id,
    }
    return httpx.patch(url, content=data, headers=headers, timeout=60)


def json_records(server: TusdProcess) -> list[dict[str, Any]]:
    """Every line of the server's output as JSON (the start-up line may still be plain text)."""
    records = []
    for line in server.lines:
        if not line.startswith("{") and LISTENING.search(line):
            continue
        records.append(json.loads(line))  # anything else that is not JSON fails the test
    return records


def error_lines(server: TusdProcess) -> list[str]:
    return [line for line in server.lines if " ERROR " in line or '"level": "error"' in line]


def wait_for_errors(server: TusdProcess, count: int) -> list[str]:
    wait_until(lambda: len(error_lines(server)) >= count, timeout=5)
    return error_lines(server)


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_read_only_upload_dir_gives_one_error_line_per_500(
    tmp_path: Path, log_format: str
) -> None:
    disk = tmp_path / "disk"
    with small_disk(disk, 4 * MiB) as mounted:
        # The test command runs as root (or with sudo -n): a mount that fails is a broken set-up.
        assert mounted, "cannot mount a tmpfs (needs root or sudo -n)"
        server = TusdProcess(disk / "uploads", ("--log-format", log_format))
        try:
            url = create(server.endpoint, 10).headers["Location"]
            assert remount_read_only(disk), "mount -o remount,ro failed"

            refused = create(server.endpoint, 10, request_id="req-post-1")
            assert refused.status_code == 500, refused.text
            assert "Read-only file system" in refused.text
            failed_patch = patch(url, b"0123456789", request_id="req-patch-1")
            assert failed_patch.status_code == 500, failed_patch.text

            errors = wait_for_errors(server, 2)
            assert len(errors) == 2, server.output
        finally:
            server.stop()

    post_line, patch_line = errors
    directory = str(disk / "uploads")
    if log_format == "text":
        assert "request_id=req-post-1" in post_line and "upload_id=" in post_line
        assert f"create {directory}/" in post_line and "Read-only file system" in post_line
        assert "request_id=req-patch-1" in patch_line
        assert f"upload_id={upload_id(url)}" in patch_line
        assert f"{directory}/{upload_id(url)}" in patch_line
        assert "Read-only file system" in patch_line
        assert "Traceback" not in server.output
        return

    records = json_records(server)
    failures = [r for r in records if r["level"] == "error"]
    assert len(failures) == 2
    post, patched = failures
    assert post["request_id"] == "req-post-1" and post["status"] == 500
    assert re.fullmatch(r"[0-9a-f]{32}", post["upload_id"]), post
    # the first file a creation makes: the upload's entry in the store's index, or its data
    assert post["operation"].startswith(f"create {directory}/"), post
    assert post["operation"].endswith(post["upload_id"]), post
    assert "Read-only file system" in post["cause"]
    assert patched["request_id"] == "req-patch-1" and patched["upload_id"] == upload_id(url)
    assert patched["operation"].endswith(f"{directory}/{upload_id(url)}")
    assert "Read-only file system" in patched["cause"]
    assert not any("exception" in r for r in records)  # tracebacks at debug only
    access = [r for r in records if r["logger"] == "tusd_py.access"]
    assert [(r["method"], r["status"]) for r in access] == [
        ("POST", 201),
        ("POST", 500),
        ("PATCH", 500),
    ]


def test_a_stopped_s3_gives_a_503_and_one_error_line_naming_the_s3_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    with s3_server() as s3:
        bucket = new_bucket(s3)
        server = TusdProcess(
            tmp_path,
            (
                "--s3-bucket", bucket, "--s3-endpoint", s3.endpoint,
                "--log-format", "json",
            ),
        )  # fmt: skip
        try:
            url = create(server.endpoint, 6 * MiB).headers["Location"]
            stop_process(s3.proc)
            refused = create(server.endpoint, 10, request_id="req-s3-down")
            assert refused.status_code == 503, refused.text
            failed_patch = patch(url, b"x" * (6 * MiB), request_id="req-s3-patch")
            assert failed_patch.status_code == 503, failed_patch.text
            errors = wait_for_errors(server, 2)
        finally:
            server.stop()
    assert len(errors) == 2, server.output
    failure, patch_failure = [r for r in json_records(server) if r["level"] == "error"]
    # The 6 MiB are the upload's one part (below --s3-part-size, and its last): UploadPart.
    assert patch_failure["operation"] == "S3 UploadPart", patch_failure
    assert patch_failure["request_id"] == "req-s3-patch"
    assert patch_failure["upload_id"] == upload_id(url)
    assert "Could not connect" in patch_failure["cause"], patch_failure
    assert failure["request_id"] == "req-s3-down"
    assert failure["status"] == 503 and failure["code"] == "storage-unavailable"
    assert failure["operation"] == "S3 CreateMultipartUpload", failure
    assert "Could not connect" in failure["cause"], failure
    assert re.fullmatch(r"[0-9a-f]{32}", failure["upload_id"]), failure
    assert "S3 CreateMultipartUpload failed: " in failure["message"]


def test_a_stopped_redis_gives_a_503_and_one_error_line_naming_the_redis_command(
    tmp_path: Path,
) -> None:
    with redis_server() as redis:
        server = TusdProcess(
            tmp_path, ("--redis-url", redis.url, "--redis-prefix", unique_prefix())
        )
        try:
            url = create(server.endpoint, 10).headers["Location"]
            stop_process(redis.proc)
            refused = httpx.head(url, headers={**TUS, "X-Request-ID": "req-redis-down"})
            assert refused.status_code == 503, refused.text
            errors = wait_for_errors(server, 1)
        finally:
            server.stop()
    assert len(errors) == 1, server.output
    [line] = errors
    assert "Redis EVALSHA get-with-holder failed: ConnectionError" in line, line
    assert f"request_id=req-redis-down upload_id={upload_id(url)}" in line, line


def test_a_patch_whose_client_went_away_logs_bytes_and_offset(tmp_path: Path) -> None:
    server = TusdProcess(tmp_path, ("--log-format", "json"))
    try:
        url = create(server.endpoint, 4 * MiB).headers["Location"]
        half = 2 * MiB
        with RawHTTP(url) as conn:
            conn.send_head("PATCH", {**patch_headers(0, 4 * MiB), "X-Request-ID": "req-gone"})
            conn.send(b"x" * half)
        kept = stable_offset(url)

        def patch_logged() -> list[dict[str, Any]]:
            return [r for r in json_records(server) if r.get("request_id") == "req-gone"]

        wait_until(lambda: bool(patch_logged()), timeout=10)
    finally:
        server.stop()
    [line] = patch_logged()  # the access line is the only line of that request
    assert line["level"] == "info" and line["status"] == 204
    assert line["body_end"] == "client went away"
    assert 0 < line["body_received"] <= half and line["upload_offset"] == kept
    assert f"client went away) after {line['body_received']} bytes" in line["message"]
    assert f"offset {kept} committed" in line["message"]


def test_debug_level_writes_one_access_line_per_request(tmp_path: Path) -> None:
    server = TusdProcess(tmp_path, ("--log-level", "debug"))
    try:
        assert create(server.endpoint, 0, request_id="req-debug").status_code == 201
        wait_until(lambda: any("POST /files/" in line for line in server.lines), timeout=5)
        httpx.get(server.endpoint.replace("/files/", "/health"))  # one more line after it
        wait_until(lambda: any("/health" in line for line in server.lines), timeout=5)
    finally:
        server.stop()
    posts = [line for line in server.lines if "POST /files/" in line]
    assert len(posts) == 1, server.output
