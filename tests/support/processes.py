"""Child processes of the tests: free ports, waiting until one listens, stopping a process.

Every process a test starts is stopped the same way, with `stop_process` (SIGTERM, a grace
period, then SIGKILL) or, when the test means a crash, `kill_process` (SIGKILL at once).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> bool:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; True when it had to be killed."""
    if proc.poll() is not None:
        return False
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        kill_process(proc)
        return True
    return False


def kill_process(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL (no cleanup, no goodbye) and wait until the process is gone."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
