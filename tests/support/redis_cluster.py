"""A real Redis Cluster for tests: six redis-server processes (three primaries, three replicas)
on free ports, joined with `redis-cli --cluster create`, stopped in `finally`.

The node timeout is short (1 s) so that a replica takes over a killed primary within seconds.
A replica may take over however long ago it last heard from its primary (validity factor 0):
with the default, a replica of a freshly created, idle cluster here often never stood for
election. Each node logs to redis.log in its directory.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.crc import key_slot

from tests.support.processes import free_port, kill_process, stop_process, wait_for_port

NODE_TIMEOUT_MS = 1000


@dataclass
class ClusterNode:
    port: int
    bus_port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (again): a restarted node rejoins with its nodes.conf, as a replica if its
        slots were taken over meanwhile."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run scripts/test, which installs it")
        command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no",
            "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-replica-validity-factor", "0", "--logfile", "redis.log",
            # A new replica (one that migrated to a primary left alone) syncs at once.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def role(self) -> str:
        with self.client() as client:
            return str(client.execute_command("ROLE")[0])


@dataclass
class RedisClusterServers:
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A seed node that is up (a client discovers the rest from it)."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                return f"redis://{node.address}/0"
        raise RuntimeError("no node of the cluster is running")

    def running(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def primary_of(self, key: str) -> ClusterNode:
        """The node that serves `key`'s slot as a primary, as a running node sees it."""
        return self.primary_of_slot(key_slot(key.encode()))

    def migrate_slot(self, slot: int, target: ClusterNode, pause: float) -> int:
        """Move `slot` to the primary `target` as `redis-cli --cluster reshard` does: mark it
        importing and migrating, MIGRATE its keys in one batch, wait `pause` seconds (clients
        are sent ASK meanwhile), then give the slot to `target` (MOVED afterwards). Returns
        the number of keys moved."""
        moved = self.start_migration(slot, target)
        time.sleep(pause)
        self.finish_migration(slot, target)
        return moved

    def start_migration(self, slot: int, target: ClusterNode) -> int:
        """`migrate_slot` up to its pause: the keys are on `target`, the slot still is not."""
        source = self.primary_of_slot(slot)
        assert source is not target
        with source.client() as src, target.client() as dst:
            source_id = src.execute_command("CLUSTER", "MYID")
            target_id = dst.execute_command("CLUSTER", "MYID")
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
            if keys:
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        return len(keys)

    def finish_migration(self, slot: int, target: ClusterNode) -> None:
        source = self.primary_of_slot(slot)
        with target.client() as dst:
            target_id = dst.execute_command("CLUSTER", "MYID")
        for node in (target, source):
            with node.client() as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def primary_of_slot(self, slot: int) -> ClusterNode:
        with self.running()[0].client() as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return next(n for n in self.nodes if n.port == int(primary[1]))
        raise RuntimeError(f"no primary serves slot {slot}")

    def primaries(self) -> list[ClusterNode]:
        return [n for n in self.running() if n.role() == "master"]

    def replicas_of(self, primary: ClusterNode) -> list[ClusterNode]:
        """The running nodes that replicate `primary`, linked or not."""
        found = []
        for node in self.running():
            with node.client() as client:
                role = client.execute_command("ROLE")
            if role[0] == "slave" and int(role[2]) == primary.port:
                found.append(node)
        return found

    def kill(self, node: ClusterNode) -> None:
        assert node.proc is not None
        kill_process(node.proc)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says cluster_state:ok and sees three primaries that serve
        slots and are not failed."""
        deadline = time.monotonic() + timeout
        problem = ""
        while time.monotonic() < deadline:
            problem = self._problem()
            if not problem:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis Cluster did not settle within {timeout}s: {problem}")

    def _problem(self) -> str:
        for node in self.running():
            try:
                with node.client() as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    if "cluster_state:ok" not in info:
                        return f"{node.address} is not ok"
                    nodes = client.execute_command("CLUSTER", "NODES")
            except OSError as exc:
                return f"{node.address}: {exc}"
            except Exception as exc:  # redis errors while a node starts
                return f"{node.address}: {exc}"
            serving = 0
            for line in str(nodes).splitlines():
                fields = line.split()
                flags = fields[2].split(",")
                failing = "fail" in flags or "fail?" in flags or fields[7] != "connected"
                if "master" in flags and not failing and len(fields) > 8:
                    serving += 1
            if serving < 3:
                return f"{node.address} sees {serving} primaries serving slots, not 3"
        return ""


@contextlib.contextmanager
def redis_cluster(spare_replicas: int = 0) -> Iterator[RedisClusterServers]:
    """Three primaries with a replica each, and `spare_replicas` more that `redis-cli` gives
    to some of them: Redis moves a spare to a primary left without a replica (replica
    migration, after the primary has been alone for 5 s)."""
    workdir = Path(tempfile.mkdtemp(prefix="tusd-redis-cluster-"))
    servers = RedisClusterServers()
    try:
        for i in range(6 + spare_replicas):
            path = workdir / str(i)
            path.mkdir()
            node = ClusterNode(free_port(), free_port(), path)
            servers.nodes.append(node)
            node.start()
        binary = shutil.which("redis-cli")
        if binary is None:
            raise RuntimeError("redis-cli is not installed; run scripts/test, which installs it")
        subprocess.run(
            [
                binary,
                "--cluster",
                "create",
                *(n.address for n in servers.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        servers.wait_ok()
        yield servers
    finally:
        for node in servers.nodes:
            if node.proc is not None:
                stop_process(node.proc)
        shutil.rmtree(workdir, ignore_errors=True)
