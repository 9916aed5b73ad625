"""At start-up the server checks S3 and Redis: a warning that names each problem, the server
starts anyway, and `/ready` answers 503 with the same reason; a creation that fails because of
the configuration says so instead of promising a resumable outage. Real processes throughout:
`python -m tusd_py`, moto's S3 server, redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.processes import free_port
from tests.support.s3_client import new_bucket
from tests.support.servers import S3Server, redis_server
from tests.support.tusd_process import TusdProcess

TUS = {"Tus-Resumable": "1.0.0"}
# No credentials anywhere botocore looks: environment, shared files, the instance metadata.
NO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "",
    "AWS_SECRET_ACCESS_KEY": "",
    "AWS_SESSION_TOKEN": "",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def warnings_of(server: TusdProcess) -> list[str]:
    return [line for line in server.lines if "WARNING tusd_py.probes: not ready:" in line]


def ready(server: TusdProcess) -> httpx.Response:
    return httpx.get(server.endpoint.replace("/files/", "/ready"), timeout=30)


def started(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> TusdProcess:
    return TusdProcess(tmp_path / "uploads", args, env)


def test_a_missing_bucket_and_an_unreachable_redis_are_named_at_start(
    tmp_path: Path, s3: S3Server
) -> None:
    redis_port = free_port()  # nothing listens there
    server = started(
        tmp_path,
        "--s3-bucket", "no-such-bucket", "--s3-endpoint", s3.endpoint,
        "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
    )  # fmt: skip
    try:
        found = warnings_of(server)
        assert len(found) == 2, server.output
        assert "storage: the S3 bucket 'no-such-bucket' does not exist" in found[0]
        assert (
            f"state: Redis is unreachable: Error 111 connecting to 127.0.0.1:{redis_port}"
            in (found[1])
        )
        answer = ready(server)
        assert answer.status_code == 503
        assert "storage: the S3 bucket 'no-such-bucket' does not exist" in answer.text
        assert "state: Redis is unreachable" in answer.text
    finally:
        server.stop()


def test_a_creation_failing_for_a_missing_bucket_says_the_server_is_misconfigured(
    tmp_path: Path, s3: S3Server
) -> None:
    server = started(tmp_path, "--s3-bucket", "no-such-bucket", "--s3-endpoint", s3.endpoint)
    try:
        created = httpx.post(server.endpoint, headers={**TUS, "Upload-Length": "3"}, timeout=30)
    finally:
        server.stop()
    assert created.status_code == 500, created.text
    assert "the S3 bucket 'no-such-bucket' does not exist" in created.text
    assert "misconfigured, which retrying will not fix" in created.text
    assert "resume it shortly" not in created.text and "intact" not in created.text


def test_an_unreachable_s3_endpoint_is_named_at_start(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    server = started(tmp_path, "--s3-bucket", "b", "--s3-endpoint", endpoint)
    try:
        found = warnings_of(server)
        assert len(found) == 1, server.output
        assert f"storage: the S3 endpoint {endpoint} is unreachable" in found[0]
        answer = ready(server)
        assert answer.status_code == 503 and f"{endpoint} is unreachable" in answer.text
    finally:
        server.stop()


def test_an_unreachable_azure_endpoint_is_named_once_at_start(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
    key = "a2V5"  # any base64: nothing answers to check it
    connection = f"AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={endpoint};"
    env = {"AZURE_STORAGE_CONNECTION_STRING": connection}
    server = started(tmp_path, "--azure-container", "c", env=env)
    try:
        found = [line for line in server.lines if "WARNING" in line and "Cannot connect" in line]
        assert len(found) == 1, server.output
        assert "storage: Azure Get Container Properties failed (Cannot connect to host" in found[0]
        assert "resume it shortly" not in found[0]
        answer = ready(server)
        assert answer.status_code == 503 and "Cannot connect to host" in answer.text
    finally:
        server.stop()


def test_missing_s3_credentials_are_named_at_start(tmp_path: Path, s3: S3Server) -> None:
    bucket = new_bucket(s3)
    server = started(
        tmp_path, "--s3-bucket", bucket, "--s3-endpoint", s3.endpoint, env=NO_CREDENTIALS
    )
    try:
        found = warnings_of(server)
        assert len(found) == 1, server.output
        assert "storage: no S3 credentials found (set AWS_ACCESS_KEY_ID" in found[0]
        answer = ready(server)
        assert answer.status_code == 503 and "no S3 credentials found" in answer.text
    finally:
        server.stop()


def test_a_reachable_bucket_and_redis_start_without_warnings(tmp_path: Path, s3: S3Server) -> None:
    with redis_server() as redis:
        bucket = new_bucket(s3)
        server = started(
            tmp_path, "--s3-bucket", bucket, "--s3-endpoint", s3.endpoint, "--redis-url", redis.url
        )
        try:
            assert warnings_of(server) == [], server.output
            assert ready(server).status_code == 200
        finally:
            server.stop()


def test_refused_redis_credentials_refuse_the_start(tmp_path: Path) -> None:
    # No retry fixes a wrong password: one line and exit 2 (tests/integration/test_redis_tls.py
    # has the ACL and TLS cases), and the password is not in it.
    with redis_server("--requirepass", "right") as redis:
        url = f"redis://:wrong@127.0.0.1:{redis.port}/0"
        done = subprocess.run(
            [sys.executable, "-m", "tusd_py", "--port", "0", "--upload-dir", str(tmp_path),
             "--redis-url", url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Redis refused the credentials" in lines[0] and "(--redis-url" in lines[0]
    assert "wrong" not in lines[0]


def test_with_json_logs_every_line_is_json_the_start_up_lines_included(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # a start-up warning, logged as JSON too
    server = started(tmp_path, "--log-format", "json", "--demo", "--redis-url", closed)
    try:
        ready(server)
        httpx.options(server.endpoint, timeout=30)
        server.terminate()
        assert server.wait(30) == 0
    finally:
        server.stop()
    entries = [json.loads(line) for line in server.lines if line.strip()]
    messages = [entry["message"] for entry in entries]
    assert f"tusd-py listening on {server.endpoint}" in messages
    listening = next(e for e in entries if e["message"].startswith("tusd-py listening on"))
    assert listening["url"] == server.endpoint and listening["level"] == "info"
    assert any(m.startswith("tusd-py demo page at http://127.0.0.1:") for m in messages)
    assert any(
        e["level"] == "warning" and e["message"].startswith("not ready: state: Redis")
        for e in entries
    )
