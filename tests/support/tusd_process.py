"""The real server as a child process: `python -m tusd_py` on a free port.

The process is started with `--port 0`; the port it got is read from the line it prints,
"tusd-py listening on http://127.0.0.1:PORT/files/". Its output is drained by a thread (so a
chatty server never blocks on a full pipe) and kept for failure reports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from tests.support.processes import stop_process

LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+/files/)")
STARTUP_TIMEOUT = 30.0


class TusdProcess:
    """One `python -m tusd_py` process; output is drained by a thread so the pipe never fills."""

    def __init__(
        self, upload_dir: Path, extra_args: tuple[str, ...], env: dict[str, str] | None = None
    ) -> None:
        self.upload_dir = upload_dir
        self.args = [
            sys.executable, "-m", "tusd_py",
            "--host", "127.0.0.1", "--port", "0", "--upload-dir", str(upload_dir),
            *extra_args,
        ]  # fmt: skip
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.endpoint = ""
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._listening.wait(STARTUP_TIMEOUT) or not self.endpoint:
            self.stop()
            raise RuntimeError(
                f"{' '.join(self.args)} printed no 'listening on http://127.0.0.1:PORT/files/' "
                f"line within {STARTUP_TIMEOUT}s (exit code {self.proc.returncode});"
                f" output:\n{self.output}"
            )

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if not self._listening.is_set() and (m := LISTENING.search(line)):
                    self.endpoint = m[1]
                    self._listening.set()
        # EOF: the process is gone; wake a waiting constructor at once.
        self._listening.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def url_for(self, upload_url: str) -> str:
        """The same upload as seen through this server (the id is the last path segment)."""
        return self.endpoint + upload_url.rstrip("/").rsplit("/", 1)[-1]

    def terminate(self) -> None:
        """Send SIGTERM, and return at once."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self, grace: float = 10.0) -> None:
        if stop_process(self.proc, grace):
            self.lines.append(f"[test harness: no exit {grace}s after SIGTERM; sent SIGKILL]")
        self._reader.join(5)


StartTusd = Callable[..., TusdProcess]
