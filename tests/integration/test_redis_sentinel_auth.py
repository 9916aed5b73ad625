"""Sentinels with a password of their own (`requirepass` in sentinel.conf): the right
`--redis-sentinel-password` finds the primary; a wrong or missing one refuses start-up with one
line and exit 2. Real redis-server processes (`--sentinel`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.redis_topologies import MASTER, SentinelGroup, sentinel_group
from tests.support.tusd_process import TusdProcess

PASSWORD = "sentinel-secret"


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    with sentinel_group(replicas=1, sentinel_password=PASSWORD) as topology:
        yield topology


def args(group: SentinelGroup) -> tuple[str, ...]:
    return ("--redis-sentinels", group.sentinel_addresses, "--redis-sentinel-master", MASTER)


def test_the_sentinel_password_finds_the_primary(tmp_path: Path, group: SentinelGroup) -> None:
    server = TusdProcess(
        tmp_path / "uploads", args(group), env={"TUSD_REDIS_SENTINEL_PASSWORD": PASSWORD}
    )
    try:
        created = httpx.post(
            server.endpoint, headers={"Tus-Resumable": "1.0.0", "Upload-Length": "5"}, timeout=30
        )
        assert created.status_code == 201, created.text
        ready = httpx.get(server.endpoint.replace("/files/", "/ready"), timeout=30)
        assert f"primary {group.primary.address}" in ready.text, ready.text
    finally:
        server.stop()
    assert PASSWORD not in server.output


@pytest.mark.parametrize("password", ["wrong", None])
def test_a_refused_sentinel_password_refuses_the_start(
    tmp_path: Path, group: SentinelGroup, password: str | None
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TUSD_REDIS_SENTINEL_PASSWORD"}
    if password:
        env["TUSD_REDIS_SENTINEL_PASSWORD"] = password
    done = subprocess.run(
        [sys.executable, "-m", "tusd_py", "--port", "0", "--upload-dir", str(tmp_path),
         *args(group)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "a Redis Sentinel refused the credentials" in lines[0], lines[0]
    assert "(--redis-sentinel-password / TUSD_REDIS_SENTINEL_PASSWORD)" in lines[0]
