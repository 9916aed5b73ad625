"""`--workers N`: the supervisor, one process over N workers that accept on one socket.

The supervisor (the process started as `tusd-py`) checks the configuration, binds the socket,
and starts each worker as a fresh interpreter (`cli.worker_main`) that inherits the
listening socket and reads the configuration as JSON on its stdin. Fresh rather than forked:
nothing of the supervisor's imports or threads leaks in, and prometheus-client, which chooses its
multiprocess mode when it is imported, sees `PROMETHEUS_MULTIPROC_DIR` from the start.

One shared socket rather than one SO_REUSEPORT socket per worker: connections waiting in the
backlog of a worker that dies are served by the others instead of being reset, `--port 0` needs
no second bind, and no unrelated process can join the port.

The supervisor starts a worker again when it exits. One that dies young is started again after
a pause that doubles with each such death in a row (capped); after CRASH_LIMIT in a row the
supervisor stops every worker and exits 1, so that a crash loop (the upload directory gone,
Redis refusing the password) reaches the process manager instead of spinning unseen. It
forwards SIGTERM/SIGINT to all and exits 0 once they have shut down gracefully. Workers run in
their own process group, so that a Ctrl-C reaches them once, through the supervisor, and each
watches its parent so that it stops when the supervisor is killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from tusd_py.workers import MULTIPROC_ENV, WORKER_ENV, WORKER_FDS_ENV

if TYPE_CHECKING:
    import socket

    from tusd_py.config import Config

log = logging.getLogger("tusd_py.workers")

STARTUP_TIMEOUT = 60.0
# A worker that exits sooner than this after its start died young: it is started again after
# RESTART_PAUSE, doubled for each young death of its slot in a row up to MAX_RESTART_PAUSE; the
# CRASH_LIMIT-th in a row stops the server (about 20 s after the first). A worker that lived
# longer starts again at once and clears its slot's count.
YOUNG = 10.0
RESTART_PAUSE = 1.0
MAX_RESTART_PAUSE = 30.0
CRASH_LIMIT = 5
# Tests only: the first pause, in seconds (the doubling and the cap stay).
RESTART_PAUSE_ENV = "_TUSD_PY_RESTART_PAUSE"
# Workers shut down within uvicorn's 30 s grace plus the post-hook drain; then SIGKILL.
SHUTDOWN_TIMEOUT = 60.0
POLL = 0.1
WORKER_COMMAND = "from tusd_py.cli import worker_main; worker_main()"


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    ready_fd: int
    started_at: float
    ready: bool = False


@dataclass
class Supervisor:
    config: Config
    sock: socket.socket
    metrics_dir: str
    workers: list[_Worker] = field(default_factory=list)
    stopping: bool = False
    # Set when a crash loop stopped the server: the exit status.
    failed: int | None = None
    # Worker index -> its young deaths in a row; position in `workers` -> when to start it again.
    young_deaths: dict[int, int] = field(default_factory=dict)
    restart_at: dict[int, float] = field(default_factory=dict)
    first_pause: float = field(
        default_factory=lambda: float(os.environ.get(RESTART_PAUSE_ENV) or RESTART_PAUSE)
    )

    def start(self, index: int) -> _Worker:
        ready_read, ready_write = os.pipe()
        env = {
            **os.environ,
            WORKER_ENV: str(index),
            WORKER_FDS_ENV: f"{self.sock.fileno()},{ready_write}",
            MULTIPROC_ENV: self.metrics_dir,
        }
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", WORKER_COMMAND],
                stdin=subprocess.PIPE,
                pass_fds=(self.sock.fileno(), ready_write),
                env=env,
                process_group=0,
            )
        finally:
            os.close(ready_write)
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(json.dumps(dataclasses.asdict(self.config)).encode())
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        return _Worker(index, proc, ready_read, time.monotonic())

    def wait_until_ready(self) -> bool:
        """Wait for every worker to report that it serves; False when one exits first."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(w.ready for w in self.workers):
            if self.stopping or time.monotonic() > deadline:
                return False
            if any(w.proc.poll() is not None for w in self.workers):
                return False
            waiting = [w.ready_fd for w in self.workers if not w.ready]
            readable, _, _ = select.select(waiting, [], [], POLL)
            for worker in self.workers:
                if worker.ready_fd in readable and os.read(worker.ready_fd, 1):
                    worker.ready = True
        return True

    def replace_dead_workers(self) -> None:
        """Start again the workers that exited, each after its pause; give up on a crash loop."""
        for position, worker in enumerate(self.workers):
            if self.stopping:
                return
            due = self.restart_at.get(position)
            if due is not None:
                if time.monotonic() >= due:
                    del self.restart_at[position]
                    self._restart(position, worker)
                continue
            code = worker.proc.poll()
            if code is not None:
                self._buried(position, worker, code)

    def _buried(self, position: int, worker: _Worker, code: int) -> None:
        """`worker` exited with `code`: start it again now, later, or stop the server."""
        from prometheus_client import multiprocess

        os.close(worker.ready_fd)
        worker.ready_fd = -1  # the number may be reused before stop_all closes what is left
        # Its live gauges (requests in flight) go; its counters stay in the host's totals.
        multiprocess.mark_process_dead(worker.proc.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        lived = time.monotonic() - worker.started_at
        if lived >= YOUNG:
            self.young_deaths.pop(worker.index, None)
            self._restart(position, worker)
            return
        deaths = self.young_deaths.get(worker.index, 0) + 1
        self.young_deaths[worker.index] = deaths
        if deaths >= CRASH_LIMIT:
            log.error(
                "worker %d exited %d times in a row within %.0f s of its start (last status "
                "%s); stopping the server, see the worker's log above for why",
                worker.index,
                deaths,
                YOUNG,
                code,
            )
            self.failed = 1
            self.stopping = True
            return
        pause = min(self.first_pause * 2 ** (deaths - 1), MAX_RESTART_PAUSE)
        log.warning(
            "worker %d (pid %d) exited with status %s %.1f s after its start; starting it "
            "again in %g s (%d of %d young deaths in a row before the server stops)",
            worker.index,
            worker.proc.pid,
            code,
            lived,
            pause,
            deaths,
            CRASH_LIMIT,
        )
        self.restart_at[position] = time.monotonic() + pause

    def _restart(self, position: int, worker: _Worker) -> None:
        replacement = self.start(worker.index)
        log.warning(
            "worker %d (pid %d) exited with status %s; started it again as pid %d",
            worker.index,
            worker.proc.pid,
            worker.proc.returncode,
            replacement.proc.pid,
        )
        self.workers[position] = replacement

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        for worker in self.workers:
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not shut down; killing it", *_names(worker))
                worker.proc.kill()
                worker.proc.wait()
            with contextlib.suppress(OSError):
                os.close(worker.ready_fd)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.stopping = True


def _names(worker: _Worker) -> tuple[int, int]:
    return worker.index, worker.proc.pid


def supervise(config: Config, sock: socket.socket, announce: list[str]) -> int:
    """Run `config.workers` workers on `sock` until SIGTERM/SIGINT; the exit status."""
    metrics_dir = tempfile.mkdtemp(prefix="tusd-py-metrics-")
    supervisor = Supervisor(config, sock, metrics_dir)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, supervisor._on_signal)
    # A release request (locking/file.py) meant for a worker must never end the supervisor.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        supervisor.workers = [supervisor.start(i) for i in range(config.workers)]
        if not supervisor.wait_until_ready():
            if supervisor.stopping:
                return 0
            log.error("a worker exited before it served; stopping the others")
            return 1
        log.info("%d workers serving (pids %s)", config.workers, _pids(supervisor))
        for line in announce:
            print(line, flush=True)
        while not supervisor.stopping:
            supervisor.replace_dead_workers()
            time.sleep(POLL)
        if supervisor.failed is not None:
            return supervisor.failed
        log.info("shutting down %d workers", len(supervisor.workers))
        return 0
    finally:
        supervisor.stop_all()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _pids(supervisor: Supervisor) -> str:
    return ", ".join(str(w.proc.pid) for w in supervisor.workers)
