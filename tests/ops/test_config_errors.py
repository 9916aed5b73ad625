"""A wrong configuration is one line on stderr and exit status 2, nothing listening.

Each case runs the real command (`python -m tusd_py`) in a directory of its own; the line must
name what is wrong and the option and TUSD_* variable to change.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mounts import remount_read_only, small_disk


def refused(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run the server with `args`; assert it refused to start as it should; its one line."""
    done = subprocess.run(
        [sys.executable, "-m", "tusd_py", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tusd-py: error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert "listening" not in done.stdout and "startup" not in done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cors-credentials"], "--cors-credentials needs --cors-origins"),
        (["--cors-credentials", "--cors-origins", "https://a.example,*"], "not '*'"),
        (["--s3-tails", "redis", "--s3-bucket", "b"], "needs --redis-url (--s3-tails"),
        (["--s3-bucket", "b", "--azure-container", "c"], "choose one"),
        (["--port", "70000"], "port 70000 is not between 0 and 65535 (--port / TUSD_PORT)"),
        (["--port", "-1"], "(--port / TUSD_PORT)"),
        (["--port", "eighty"], "'eighty' is not a valid integer. (TUSD_PORT)"),
        (["--max-size", "5X"], "not a size: '5X'"),
        (["--host", "no-such-host.invalid"], "cannot resolve the host 'no-such-host.invalid'"),
        (["--host", "192.0.2.1"], "192.0.2.1 is not an address of this machine (--host"),
        (["--redis-url", "notaurl"], "must start with redis://, rediss:// or unix://"),
        (["--redis-url", "redis://localhost:port"], "is not valid: Port could not be cast"),
        (["--redis-url", "redis://"], "names no host (--redis-url / TUSD_REDIS_URL)"),
        (["--s3-bucket", "b", "--s3-endpoint", "notaurl"], "(--s3-endpoint / TUSD_S3_ENDPOINT)"),
        (["--hooks-http", "notaurl"], "the hook URL must be an http:// or https:// URL"),
        (["--metrics-path", "metrics"], "must start with '/', got 'metrics' (--metrics-path /"),
        (["--s3-region", "eu-west-1"], "--s3-region is set but --s3-bucket is not"),
        (["--s3-endpoint", "http://127.0.0.1:9000"], "(--s3-endpoint / TUSD_S3_ENDPOINT)"),
        (["--s3-part-size", "8MiB"], "--s3-part-size is set but --s3-bucket is not"),
        (["--azure-prefix", "p/"], "--azure-prefix is set but --azure-container is not"),
        (["--azure-blob-access-tier", "cool"], "(--azure-blob-access-tier / TUSD_AZURE_BLOB"),
        (["--no-such-option"], "No such option"),
        (["--retain-finished", "30d", "--s3-bucket", "b"], "lifecycle rule"),
        (["--expiration-sweep-interval", "0"], "> 0 (--expiration-sweep-interval"),
    ],
)
def test_a_wrong_value_is_one_line_and_status_2(args: list[str], says: str, tmp_path: Path) -> None:
    assert says in refused(["--port", "0", *args], tmp_path)


def test_a_wrong_variable_names_itself(tmp_path: Path) -> None:
    line = refused([], tmp_path, {"TUSD_S3_REGION": "eu-west-1", "TUSD_PORT": "0"})
    assert "(--s3-region / TUSD_S3_REGION)" in line
    line = refused([], tmp_path, {"TUSD_METRICS_PATH": "m"})
    assert "(--metrics-path / TUSD_METRICS_PATH)" in line


def test_an_unknown_aws_profile_is_refused(tmp_path: Path) -> None:
    line = refused(["--port", "0", "--s3-bucket", "b"], tmp_path, {"AWS_PROFILE": "no-such"})
    assert "the AWS profile 'no-such' is not in the AWS config or credentials file" in line


NO_AZURE_CREDENTIALS = {
    "AZURE_STORAGE_CONNECTION_STRING": "",
    "AZURE_STORAGE_ACCOUNT": "",
    "AZURE_STORAGE_KEY": "",
}


def test_azure_without_credentials_is_refused(tmp_path: Path) -> None:
    line = refused(["--port", "0", "--azure-container", "c"], tmp_path, NO_AZURE_CREDENTIALS)
    assert "no Azure account: set AZURE_STORAGE_CONNECTION_STRING" in line
    key_only = {**NO_AZURE_CREDENTIALS, "AZURE_STORAGE_KEY": "a2V5"}
    args = ["--port", "0", "--azure-container", "c", "--azure-endpoint", "http://127.0.0.1:1/a"]
    assert "AZURE_STORAGE_KEY needs AZURE_STORAGE_ACCOUNT" in refused(args, tmp_path, key_only)


def test_a_busy_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused(["--port", str(port)], tmp_path)
    assert f"port {port} on 127.0.0.1 is already in use (--port / TUSD_PORT)" in line


def test_an_upload_dir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    line = refused(["--port", "0", "--upload-dir", str(tmp_path / "a-file" / "up")], tmp_path)
    assert "cannot create the upload directory" in line and "Not a directory" in line
    assert "(--upload-dir / TUSD_UPLOAD_DIR)" in line


@contextlib.contextmanager
def read_only_mount(path: Path) -> Iterator[Path]:
    """A read-only tmpfs at `path`: root ignores permission bits, not a read-only file system.
    The test command runs as root (or with sudo -n), so a mount that fails is a broken set-up."""
    with small_disk(path, 1024 * 1024) as mounted:
        assert mounted, "cannot mount a tmpfs (needs root or sudo -n)"
        assert remount_read_only(path), "mount -o remount,ro failed"
        yield path


def test_an_existing_read_only_upload_dir_is_refused(tmp_path: Path) -> None:
    with read_only_mount(tmp_path / "ro") as directory:
        line = refused(["--port", "0", "--upload-dir", str(directory)], tmp_path)
        assert f"cannot write in the upload directory {directory}: Read-only file system" in line
        inside = refused(["--port", "0", "--upload-dir", str(directory / "sub")], tmp_path)
        assert "cannot create the upload directory" in inside


def test_help_names_each_variable_and_version_prints_the_version() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "tusd_py", "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())  # click wraps the help text
    assert "--upload-dir TEXT Directory of the local file store. [env var: TUSD_UPLOAD_DIR;" in text
    assert "TUSD_UPLOAD_DIR; default: ./data]" in text
    version = subprocess.run(
        [sys.executable, "-m", "tusd_py", "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.startswith("tusd-py, version ")
