"""Which process this is under `--workers N`: the names the supervisor (supervisor.py) and its
workers share, and the few questions other modules ask ("am I a worker, and which?")."""

from __future__ import annotations

import os

# Set in a worker process: its index, 0 to N-1 (a restarted worker keeps its index).
WORKER_ENV = "_TUSD_PY_WORKER"
# Set in a worker process: the listening socket's fd and the fd it reports "started" on.
WORKER_FDS_ENV = "_TUSD_PY_WORKER_FDS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def worker_index() -> int | None:
    """This process's worker index under `--workers`, or None when it is not a worker."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None and value.isdigit() else None


def worker_fds() -> tuple[int, int]:
    """In a worker: the listening socket's fd and the ready pipe's."""
    sock_fd, ready_fd = (int(fd) for fd in os.environ[WORKER_FDS_ENV].split(","))
    return sock_fd, ready_fd


def runs_host_wide_tasks() -> bool:
    """True in the one process per host that runs what must run once (the expiry sweep):
    worker 0, or the only process without `--workers`."""
    return worker_index() in (None, 0)


def available_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the whole machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
