"""Redis as production runs it, for tests: a primary with replicas behind three Sentinels, and a
TLS-only redis-server with an ACL user and certificates made here with openssl. Every process is
real, on a free port, and stopped in `finally`."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.support.processes import free_port, kill_process, stop_process, wait_for_port
from tests.support.servers import start_redis_process

MASTER = "mymaster"
# Short enough for a test, long enough that a loaded 2-core machine does not see a healthy
# primary as down.
DOWN_AFTER_MS = 1500
FAILOVER_TIMEOUT_MS = 10_000


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class SentinelGroup:
    """A primary, its replicas and three Sentinels monitoring them as `MASTER`."""

    primary: Node
    replicas: list[Node]
    sentinels: list[Node]
    workdir: Path
    password: str | None = None  # the Sentinels' own
    ca_file: Path | None = None  # every node and Sentinel speaks TLS only, signed by this CA
    killed: list[Node] = field(default_factory=list)

    def client_kwargs(self) -> dict[str, Any]:
        if self.ca_file is None:
            return {}
        return {"ssl": True, "ssl_ca_certs": str(self.ca_file)}

    def sentinel_client(self, node: Node) -> redis.Redis:
        return redis.Redis(
            port=node.port,
            password=self.password,
            socket_timeout=1,
            decode_responses=True,
            **self.client_kwargs(),
        )

    @property
    def sentinel_addresses(self) -> str:
        return ",".join(s.address for s in self.sentinels)

    def primary_address(self) -> str:
        """The primary as the Sentinels report it now (the first that answers)."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError), self.sentinel_client(sentinel) as client:
                host, port = client.sentinel_get_master_addr_by_name(MASTER)
                return f"{host}:{port}"
        raise RuntimeError("no Sentinel answers")

    def kill_primary(self) -> str:
        """`kill -9` of the primary; its address."""
        kill_process(self.primary.proc)
        self.killed.append(self.primary)
        return self.primary.address

    def wait_for_failover(self, old: str, timeout: float = 60.0) -> str:
        """Wait until the Sentinels name a primary other than `old`, and it accepts writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, redis.RedisError):
                now = self.primary_address()
                if now != old:
                    port = int(now.rsplit(":", 1)[1])
                    with redis.Redis(port=port, socket_timeout=1, **self.client_kwargs()) as client:
                        if client.info("replication")["role"] == "master":
                            return now
            time.sleep(0.1)
        raise RuntimeError(f"no failover away from {old} within {timeout}s")

    def stop(self) -> None:
        for node in [*self.sentinels, self.primary, *self.replicas]:
            stop_process(node.proc)


def _sentinel_conf(
    workdir: Path, port: int, primary_port: int, password: str | None, tls: list[str]
) -> Path:
    conf = workdir / f"sentinel-{port}.conf"
    # With requirepass a Sentinel also uses it towards the other Sentinels.
    auth = f"requirepass {password}\n" if password else ""
    # The data nodes' `--name value` TLS pairs, as sentinel.conf lines.
    tls_lines = "".join(f"{tls[i][2:]} {tls[i + 1]}\n" for i in range(0, len(tls), 2))
    listen = f"port 0\ntls-port {port}\n" if tls else f"port {port}\n"
    conf.write_text(
        auth + tls_lines + listen + "bind 127.0.0.1\n"
        "protected-mode no\n"
        f"dir {workdir}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER} 2\n"
    )
    return conf


def _wait_until_known(group: SentinelGroup, timeout: float = 60.0) -> None:
    """Until every Sentinel sees every replica in sync and the other two Sentinels: before that
    a failover could not be agreed on."""
    want_replicas = len(group.replicas)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = 0
        for sentinel in group.sentinels:
            with contextlib.suppress(redis.RedisError), group.sentinel_client(sentinel) as client:
                state = client.sentinel_master(MASTER)
                replicas = client.sentinel_slaves(MASTER)
                online = [r for r in replicas if r.get("master-link-status") == "ok"]
                if int(state["num-other-sentinels"]) >= 2 and len(online) >= want_replicas:
                    ready += 1
        if ready == len(group.sentinels):
            return
        time.sleep(0.2)
    raise RuntimeError("the Sentinels did not discover the replicas and each other in time")


@contextlib.contextmanager
def sentinel_group(
    replicas: int = 2, sentinel_password: str | None = None, tls: bool = False
) -> Iterator[SentinelGroup]:
    """A primary, `replicas` replicas (no persistence) and three Sentinels (quorum 2), which
    ask for `sentinel_password` when given. With `tls`, all of them on TLS only (replication
    and Sentinel's own links too), with certificates signed by the group's `ca_file`."""
    workdir = Path(tempfile.mkdtemp(prefix="tusd-sentinel-"))
    started: list[subprocess.Popen[bytes]] = []
    try:
        tls_args: list[str] = []
        ca_file = None
        if tls:
            ca = make_ca(workdir, "group-ca")
            cert, key = make_server_cert(workdir, ca)
            ca_file = ca[0]
            tls_args = [
                "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no",
                "--tls-replication", "yes",
            ]  # fmt: skip

        def data_node(port: int, *extra: str) -> subprocess.Popen[bytes]:
            # Later arguments win: `--port 0` turns the plain port off.
            listen = ["--port", "0", "--tls-port", str(port)] if tls else []
            directory = str(_node_dir(workdir, port))
            return start_redis_process(port, directory, *listen, *tls_args, *extra)

        port = free_port()
        primary = Node(port, data_node(port))
        started.append(primary.proc)
        replica_nodes = []
        for _ in range(replicas):
            port = free_port()
            proc = data_node(port, "--replicaof", "127.0.0.1", str(primary.port))
            started.append(proc)
            replica_nodes.append(Node(port, proc))
        sentinels = []
        binary = shutil.which("redis-server")
        assert binary is not None
        for _ in range(3):
            port = free_port()
            conf = _sentinel_conf(workdir, port, primary.port, sentinel_password, tls_args)
            proc = subprocess.Popen(
                [binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            started.append(proc)
            wait_for_port(port, proc)
            sentinels.append(Node(port, proc))
        group = SentinelGroup(
            primary, replica_nodes, sentinels, workdir, sentinel_password, ca_file
        )
        _wait_until_known(group)
        yield group
    finally:
        for proc in started:
            stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _node_dir(workdir: Path, port: int) -> Path:
    path = workdir / str(port)
    path.mkdir()
    return path


# -- TLS and ACL --------------------------------------------------------------------------


LEAST_USER = "tusd-least"
LEAST_COMMANDS = (
    "+@read", "+@write", "+@scripting", "+@pubsub", "+ping", "+info", "+wait", "+client|setname",
)  # fmt: skip


@dataclass
class TlsRedis:
    port: int
    proc: subprocess.Popen[bytes]
    ca_file: Path  # the CA that signed the server's certificate
    other_ca_file: Path  # a CA that signed nothing of this server's
    user: str
    password: str
    client_cert: tuple[Path, Path]  # a client certificate and key signed by `ca_file`

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """rediss:// with credentials (default: the ACL user's)."""
        return f"rediss://{user or self.user}:{password or self.password}@127.0.0.1:{self.port}/0"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    return cert, key


def make_server_cert(
    directory: Path, ca: tuple[Path, Path], name: str = "redis"
) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost signed by `ca`: (certificate, key)."""
    cert, key, csr = (directory / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
    ext = directory / f"{name}-san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr),
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def tls_redis(auth_clients: bool = False) -> Iterator[TlsRedis]:
    """redis-server on TLS only (`--port 0`), with the default user off and one ACL user;
    with `auth_clients`, it also demands a client certificate signed by its CA."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed; run scripts/test, which installs it")
    workdir = Path(tempfile.mkdtemp(prefix="tusd-redis-tls-"))
    try:
        ca = make_ca(workdir, "test-ca")
        other_ca, _ = make_ca(workdir, "other-ca")
        cert, key = make_server_cert(workdir, ca)
        client_cert = make_server_cert(workdir, ca, "client")
        port = free_port()
        user, password = "tusd", "acl-secret-1"
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run scripts/test")
        proc = subprocess.Popen(
            [
                binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(ca[0]),
                "--tls-auth-clients", "yes" if auth_clients else "no",
                "--save", "", "--appendonly", "no", "--dir", str(workdir),
                # Each word its own argument: redis-server quotes one with spaces as one word.
                "--user", "default", "off",
                "--user", user, "on", f">{password}", "~*", "&*", "+@all",
                # The least docs/redis.md says tusd-py needs, for the default prefix.
                "--user", LEAST_USER, "on", f">{password}", "~tusd:*", "&tusd:locks:*",
                *LEAST_COMMANDS,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(port, proc)
            yield TlsRedis(port, proc, ca[0], other_ca, user, password, client_cert)
        finally:
            stop_process(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
