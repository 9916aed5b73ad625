"""SIGTERM while a slow client is in the middle of a PATCH: the server exits in good time and
keeps every byte it had received, so a new server on the same directory resumes the upload.

This is what a rolling deploy does to an upload in flight (Kubernetes sends SIGTERM, then
SIGKILL after its grace period).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest

from tests.support.socket_http import RawHTTP, patch_headers, raw_create
from tests.support.source_files import MakeFile
from tests.support.tus_requests import download_sha256, stable_offset
from tests.support.tusd_process import StartTusd

MiB = 1024 * 1024
KiB = 1024
EXIT_DEADLINE = 15.0  # seconds from SIGTERM; the rest of the body would take ~25 s to send

pytestmark = pytest.mark.e2e


class SlowPatch(threading.Thread):
    """Sends `burst` bytes of a PATCH body at once, then trickles the rest until stopped."""

    def __init__(self, url: str, data: bytes, burst: int) -> None:
        super().__init__(daemon=True)
        self.url, self.data, self.burst = url, data, burst
        self.sent = 0
        self.burst_sent = threading.Event()
        self.halt = threading.Event()
        self.ended_by = ""

    def run(self) -> None:
        try:
            with RawHTTP(self.url, timeout=5) as conn:
                conn.send_head("PATCH", patch_headers(0, len(self.data)))
                conn.send(self.data[: self.burst])
                self.sent = self.burst
                self.burst_sent.set()
                while self.sent < len(self.data) and not self.halt.wait(0.1):
                    piece = self.data[self.sent : self.sent + 32 * KiB]
                    conn.send(piece)
                    self.sent += len(piece)
                self.ended_by = "halted" if self.halt.is_set() else "body complete"
                if not self.halt.is_set():
                    self.ended_by += f", response {conn.read_response()}"
        except OSError as exc:
            self.ended_by = f"connection error: {exc!r}"
        finally:
            self.burst_sent.set()


def test_sigterm_during_a_slow_patch_keeps_the_received_bytes(
    tusd_factory: StartTusd, make_file: MakeFile
) -> None:
    source = make_file(8 * MiB)
    first = tusd_factory()
    url = raw_create(first.endpoint, source.size)

    sender = SlowPatch(url, source.data, burst=512 * KiB)
    sender.start()
    assert sender.burst_sent.wait(10), "could not send the first bytes"
    assert sender.sent == sender.burst, sender.ended_by
    time.sleep(0.5)  # the burst has long arrived; the PATCH is still in flight
    received_before_sigterm = sender.burst

    first.terminate()
    signalled = time.monotonic()
    try:
        code = first.wait(EXIT_DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"server still running {EXIT_DEADLINE}s after SIGTERM with a PATCH in flight "
            f"({sender.sent} of {source.size} bytes sent so far)"
        )
    took = time.monotonic() - signalled
    sender.halt.set()
    sender.join(10)
    # uvicorn re-raises the signal it caught once its shutdown is done, so a clean stop may
    # also end "killed by SIGTERM"; what matters is what the next server finds.
    assert code in (0, -signal.SIGTERM), f"exit code {code} after SIGTERM (took {took:.1f}s)"

    second = tusd_factory(upload_dir=first.upload_dir)
    resumed_url = second.url_for(url)
    kept = stable_offset(resumed_url)
    print(f"sent {sender.sent}, kept {kept}, exit {code} after {took:.2f}s; {sender.ended_by}")
    assert received_before_sigterm <= kept <= sender.sent, (
        f"{received_before_sigterm} bytes had arrived before SIGTERM and {sender.sent} were "
        f"sent in all, but the restarted server reports offset {kept} "
        f"(client side ended by: {sender.ended_by}; exit took {took:.1f}s)"
    )

    rest = source.data[kept:]
    with RawHTTP(resumed_url) as conn:
        conn.send_head("PATCH", patch_headers(kept, len(rest)))
        conn.send(rest)
        response = conn.read_response()
    assert response.status == 204, f"PATCH at {kept}: {response}"
    assert download_sha256(resumed_url) == (source.size, source.sha256)
