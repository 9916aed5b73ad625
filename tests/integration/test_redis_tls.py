"""TLS and ACL credentials: a TLS-only redis-server (`--port 0`, certificates made by the fixture
with openssl) whose default user is off; the server connects with rediss://, the fixture's CA
and the ACL user, and refuses to start, with one line and exit 2, when the certificate does not
verify or the password is wrong. Credentials never appear in output or /ready."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.redis_topologies import LEAST_USER, TlsRedis, tls_redis
from tests.support.tusd_process import TusdProcess

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsRedis]:
    with tls_redis() as server:
        yield server


def upload_through(server: TusdProcess, data: bytes) -> None:
    created = httpx.post(
        server.endpoint, headers={**TUS, "Upload-Length": str(len(data))}, timeout=30
    )
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    patched = httpx.patch(
        url,
        content=data,
        headers={
            **TUS,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=30,
    )
    assert patched.status_code == 204, patched.text
    got = httpx.get(url, timeout=30)
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()


def ready_text(server: TusdProcess) -> str:
    answer = httpx.get(server.endpoint.replace("/files/", "/ready"), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.text


def refused(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tusd_py", "--port", "0", "--upload-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tusd-py: error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_rediss_with_the_ca_and_an_acl_user_in_the_url(tmp_path: Path, tls: TlsRedis) -> None:
    server = TusdProcess(
        tmp_path / "uploads", ("--redis-url", tls.url(), "--redis-ca-file", str(tls.ca_file))
    )
    try:
        upload_through(server, os.urandom(300_000))
        shown = ready_text(server)
        assert f"redis: single, primary 127.0.0.1:{tls.port}" in shown
        assert tls.password not in shown
    finally:
        server.stop()
    assert tls.password not in server.output


def test_the_least_permissions_the_docs_name_suffice(tmp_path: Path, tls: TlsRedis) -> None:
    server = TusdProcess(
        tmp_path / "uploads",
        (
            "--redis-url", tls.url(user=LEAST_USER),
            "--redis-ca-file", str(tls.ca_file),
            "--redis-wait-replicas", "0",
        ),
    )  # fmt: skip
    try:
        upload_through(server, os.urandom(5000))
        assert "redis: single" in ready_text(server)
        assert "NOPERM" not in server.output and "WARNING" not in server.output, server.output
    finally:
        server.stop()


def test_user_and_password_as_options(tmp_path: Path, tls: TlsRedis) -> None:
    server = TusdProcess(
        tmp_path / "uploads",
        (
            "--redis-url", f"rediss://127.0.0.1:{tls.port}/0",
            "--redis-ca-file", str(tls.ca_file),
            "--redis-username", tls.user,
        ),
        env={"TUSD_REDIS_PASSWORD": tls.password},
    )  # fmt: skip
    try:
        upload_through(server, os.urandom(1000))
    finally:
        server.stop()
    assert tls.password not in server.output


def test_a_certificate_that_does_not_verify_refuses_the_start(
    tmp_path: Path, tls: TlsRedis
) -> None:
    line = refused(tmp_path, "--redis-url", tls.url(), "--redis-ca-file", str(tls.other_ca_file))
    assert "the Redis server's TLS certificate does not verify" in line, line
    assert "(--redis-ca-file / TUSD_REDIS_CA_FILE)" in line
    assert tls.password not in line


def test_a_wrong_password_refuses_the_start(tmp_path: Path, tls: TlsRedis) -> None:
    line = refused(
        tmp_path,
        "--redis-url", f"rediss://127.0.0.1:{tls.port}/0",
        "--redis-ca-file", str(tls.ca_file),
        "--redis-username", tls.user,
        env={"TUSD_REDIS_PASSWORD": "not-the-password"},
    )  # fmt: skip
    assert "Redis refused the credentials" in line and "(--redis-password" in line, line
    assert "not-the-password" not in line


def test_plain_redis_to_a_tls_port_is_not_a_configuration_error(
    tmp_path: Path, tls: TlsRedis
) -> None:
    # Indistinguishable from an unreachable Redis (the TLS port drops the plain connection):
    # the server starts, warns, and /ready says why.
    server = TusdProcess(
        tmp_path / "uploads",
        ("--redis-url", f"redis://{tls.user}:{tls.password}@127.0.0.1:{tls.port}/0"),
    )
    try:
        answer = httpx.get(server.endpoint.replace("/files/", "/ready"), timeout=30)
        assert answer.status_code == 503 and "state: Redis" in answer.text
        assert tls.password not in answer.text
    finally:
        server.stop()


def test_a_client_certificate_where_redis_demands_one(tmp_path: Path) -> None:
    # Without one, what the client sees depends on timing (the server's TLS alert, or only a
    # reset connection: then it looks unreachable and start-up just warns), so only the
    # working case is checked here.
    with tls_redis(auth_clients=True) as strict:
        cert, key = strict.client_cert
        server = TusdProcess(
            tmp_path / "uploads",
            (
                "--redis-url", strict.url(), "--redis-ca-file", str(strict.ca_file),
                "--redis-cert-file", str(cert), "--redis-key-file", str(key),
            ),
        )  # fmt: skip
        try:
            upload_through(server, os.urandom(2000))
        finally:
            server.stop()
