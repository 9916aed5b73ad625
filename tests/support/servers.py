"""Real servers for tests: redis-server and moto's S3 server (HTTP, or HTTPS with a CA of the
test's own), each on a free port.

Each is started as its own process, polled until it answers, and stopped in `finally`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from tests.support.processes import free_port, stop_process, wait_for_port
from tests.support.tls import CertificateAuthority


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    workdir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self, down_for: float = 0.0) -> None:
        """Stop and start again on the same port (its data is gone: no persistence)."""
        stop_process(self.proc)
        time.sleep(down_for)
        self.proc = start_redis_process(self.port, self.workdir)


def start_redis_process(port: int, workdir: str, *extra: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; run scripts/test, which installs it")
    command = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", workdir, "--protected-mode", "no", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    return proc


@contextlib.contextmanager
def redis_server(*extra: str) -> Iterator[RedisServer]:
    """`extra`: more redis-server arguments, e.g. "--requirepass", "secret"."""
    workdir = tempfile.mkdtemp(prefix="tusd-redis-")
    port = free_port()
    server = RedisServer(port, start_redis_process(port, workdir, *extra), workdir)
    try:
        yield server
    finally:
        stop_process(server.proc)
        shutil.rmtree(workdir, ignore_errors=True)


def unique_prefix() -> str:
    """A Redis key prefix of its own, so that tests sharing one redis-server never meet."""
    return "t" + uuid.uuid4().hex[:12]


@contextlib.contextmanager
def redis_down(server: RedisServer) -> Iterator[None]:
    """Redis is stopped inside the block and started again (empty) on the same port after it."""
    stop_process(server.proc)
    try:
        yield
    finally:
        server.proc = start_redis_process(server.port, server.workdir)


@dataclass
class S3Server:
    port: int
    proc: subprocess.Popen[bytes]
    ca: CertificateAuthority | None = None  # over HTTPS: the CA that signed its certificate

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.ca else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ca_bundle(self) -> str | None:
        return str(self.ca.ca_cert) if self.ca else None

    def reset(self) -> None:
        """Drop every bucket and object (moto's reset endpoint)."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        context = ssl.create_default_context(cafile=self.ca_bundle) if self.ca else None
        urllib.request.urlopen(req, timeout=10, context=context).close()


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def s3_server(
    env_extra: dict[str, str] | None = None, ca: CertificateAuthority | None = None
) -> Iterator[S3Server]:
    """moto's S3 server; with `ca`, over HTTPS with the certificate that CA signed."""
    port = free_port()
    env = {**os.environ, **S3_ENV, **(env_extra or {})}
    tls = ["--ssl-cert", str(ca.server_cert), "--ssl-key", str(ca.server_key)] if ca else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), *tls],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for_port(port, proc, timeout=60)
        yield S3Server(port, proc, ca)
    finally:
        stop_process(proc)
