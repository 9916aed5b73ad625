"""Real server processes that the suite kills, pauses and restarts.

An `Instance` keeps its port across restarts (so clients find it again where it was), and keeps
the output of every run it had, for failure reports. A `Cluster` is a few instances on the same
shared state (Redis) and storage, as in a real deployment.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.processes import free_port, kill_process
from tests.support.tusd_process import TusdProcess


class Instance:
    def __init__(self, name: str, upload_dir: Path, args: Sequence[str]) -> None:
        self.name = name
        self.upload_dir = upload_dir
        self.args = tuple(args)
        self.port = free_port()
        self.proc: TusdProcess | None = None
        self.paused = False
        self.kills = 0
        self.restarts = 0
        self._old_output: list[str] = []
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/files/"

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.proc.poll() is None and not self.paused

    def start(self) -> Instance:
        with self._lock:
            if self.proc is not None:
                self._retire()
                self.restarts += 1
            self.proc = TusdProcess(self.upload_dir, (*self.args, "--port", str(self.port)))
        return self

    def kill(self) -> None:
        """SIGKILL: no commit, no lock release, no goodbye."""
        with self._lock:
            if self.proc is not None and self.proc.proc.poll() is None:
                kill_process(self.proc.proc)
                self.kills += 1
            self.paused = False

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        with self._lock:
            if self.proc is not None:
                if self.paused:
                    self.proc.proc.send_signal(signal.SIGCONT)
                    self.paused = False
                self.proc.stop()

    def _retire(self) -> None:
        assert self.proc is not None
        if self.proc.proc.poll() is None:
            self.proc.stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._old_output += [f"--- {self.name}: earlier run (exit {self.proc.proc.returncode})"]
        self._old_output += self.proc.lines

    @property
    def output(self) -> str:
        lines = list(self._old_output)
        if self.proc is not None:
            lines += [f"--- {self.name}: current run", *self.proc.lines]
        return "\n".join(lines)


class Cluster:
    def __init__(self, instances: Sequence[Instance]) -> None:
        self.instances = list(instances)

    def endpoints(self) -> list[str]:
        return [i.endpoint for i in self.instances]

    def pick_up(self, rng: random.Random) -> Instance | None:
        up = [i for i in self.instances if i.up]
        return rng.choice(up) if up else None

    @property
    def kills(self) -> int:
        return sum(i.kills for i in self.instances)

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()

    def dump(self, tail: int = 200) -> None:
        for instance in self.instances:
            lines = instance.output.splitlines()
            print(f"=== output of {instance.name} ({len(lines)} lines, last {tail}) ===")
            print("\n".join(lines[-tail:]))


@contextlib.contextmanager
def running_cluster(
    names: Sequence[str], upload_dir: Path, args: Sequence[str]
) -> Iterator[Cluster]:
    """Start one instance per name on the same arguments; stop them and print their output."""
    cluster = Cluster([Instance(name, upload_dir, args) for name in names])
    try:
        for instance in cluster.instances:
            instance.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.dump()
