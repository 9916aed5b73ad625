"""SIGTERM and Ctrl-C (SIGINT) end the server cleanly: exit status 0, no "Aborted!"."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.tusd_process import TusdProcess


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_server_with_status_0(tmp_path: Path, sig: signal.Signals) -> None:
    server = TusdProcess(tmp_path, ())
    try:
        server.proc.send_signal(sig)
        assert server.proc.wait(timeout=30) == 0, server.output
    finally:
        server.stop()
    assert "Aborted" not in server.output and "Traceback" not in server.output
