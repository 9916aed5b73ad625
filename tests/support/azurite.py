"""Azurite, Microsoft's Azure Storage emulator: its blob service on a free port.

`npm ci` in tests/azurite (scripts/test does it) installs it; `azurite_server()` starts
`azurite-blob` with its data in a temporary directory, polls until it answers, and stops it in
`finally`. Azurite serves the well-known development account `devstoreaccount1` only.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import free_port, stop_process, wait_for_port

AZURITE_DIR = Path(__file__).resolve().parents[1] / "azurite"
AZURITE_BLOB = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"

# Azurite's development account; the key is public and documented, not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass
class AzuriteServer:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        """The blob service URL (path-style: the account is the first path segment)."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    @property
    def env(self) -> dict[str, str]:
        """What a tusd-py process needs to reach it (use with `--azure-endpoint` or alone)."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}


def unique_container() -> str:
    """A container name of its own (3-63 lower-case letters, digits and dashes)."""
    return "tusd-" + uuid.uuid4().hex[:16]


@contextlib.contextmanager
def azurite_server() -> Iterator[AzuriteServer]:
    if not AZURITE_BLOB.exists():
        raise RuntimeError(
            f"{AZURITE_BLOB} is missing; run scripts/test, or npm ci in {AZURITE_DIR}"
        )
    workdir = tempfile.mkdtemp(prefix="tusd-azurite-")
    port = free_port()
    command = [
        str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(port),
        "--location", workdir, "--silent", "--skipApiVersionCheck", "--loose",
        "--disableTelemetry",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, timeout=60)
        yield AzuriteServer(port, proc)
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    """Azurite's blob service for the whole session; tests use distinct containers."""
    with azurite_server() as server:
        yield server
