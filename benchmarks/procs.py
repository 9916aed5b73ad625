"""Child processes of a benchmark run: servers that print their endpoint, clients that print JSON.

A server is started, its output drained by a thread (so a chatty one never blocks), and it is
considered up once it prints `listening on http://...`. Its peak resident memory (with its
children's: `tusd-py --workers N`) is read from /proc (VmHWM), and reset before each measurement
by writing 5 to /proc/PID/clear_refs, so each measurement sees the peak of its own run, not of
the process's life.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LISTENING = re.compile(r"listening on (http://\S+)")


class BenchmarkError(RuntimeError):
    pass


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[str]
    endpoint: str = ""
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None  # drains the output until the process ends

    def pids(self) -> list[int]:
        """The server's process and its children (the workers of `tusd-py --workers N`)."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            children = ""
        return [self.proc.pid, *(int(pid) for pid in children.split())]

    def _status(self, key: str) -> int:
        """Summed over `pids()`: a supervisor and its workers serve together."""
        total = 0
        for pid in self.pids():
            try:
                text = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
            total += int(match[1]) * 1024 if match else 0
        return total

    def reset_peak_rss(self) -> None:
        # Not Linux, or not allowed: the peak then covers the process's whole life.
        for pid in self.pids():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def peak_rss(self) -> int:
        """Peak resident set size in bytes since the last reset (VmHWM; with workers, the sum
        of their peaks)."""
        return self._status("VmHWM")

    def cpu_seconds(self) -> float:
        """User + system CPU time the process (all its threads) and its children have used so
        far."""
        ticks = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def output(self) -> str:
        return "\n".join(self.lines[-40:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.reader is not None:
            self.reader.join(5)


def start_server(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> Server:
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        cwd=cwd,
        text=True,
        errors="replace",
    )
    server = Server(name, proc)
    listening = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                server.lines.append(line.rstrip("\n"))
                if len(server.lines) > 2000:
                    del server.lines[:1000]
                if not listening.is_set() and (match := LISTENING.search(line)):
                    server.endpoint = match[1]
                    listening.set()
        listening.set()

    server.reader = threading.Thread(target=drain, daemon=True)
    server.reader.start()
    if not listening.wait(timeout) or not server.endpoint:
        server.stop()
        raise BenchmarkError(f"{name} did not start ({' '.join(argv)}):\n{server.output}")
    return server


def run_json(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run a client that prints one JSON object as its last line; return it.

    A client that fails to say anything is reported as {"ok": False, "error": ...}.
    """
    started = time.perf_counter()
    try:
        done = subprocess.run(
            list(argv),
            env={**os.environ, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"no answer within {timeout:.0f}s: {' '.join(argv)}"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr or done.stdout).strip()[-600:]
        return {"ok": False, "error": f"exit {done.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    result.setdefault("wall", time.perf_counter() - started)
    return result


def busy_cores(interval: float) -> float:
    """How many cores were busy, on average, over the next `interval` seconds (/proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(interval)
    busy1, total1 = sample()
    cores = os.cpu_count() or 1
    return cores * (busy1 - busy0) / max(1, total1 - total0)


def wait_until_quiet(limit: float = 0.15, most: float = 5.0) -> float:
    """Wait until the machine is idle, at most `most` seconds; returns the busy cores last seen.

    A server may go on working after its client got the answer (a peer finishing its parts,
    moto freeing a deleted upload, the kernel writing back dirty pages); the next case must not
    pay for it. Cases that followed `@tus/s3-store` ran up to 2x slower before this wait.
    """
    deadline = time.monotonic() + most
    while True:
        busy = busy_cores(0.1)
        if busy < limit or time.monotonic() >= deadline:
            return busy
