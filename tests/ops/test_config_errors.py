"""A wrong configuration is one line on stderr and exit status 2, nothing listening."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cors-credentials"], "--cors-credentials needs --cors-origins"),
        (["--cors-credentials", "--cors-origins", "https://a.example,*"], "not '*'"),
        (["--s3-tails", "redis", "--s3-bucket", "b"], "redis_url"),
        (["--s3-bucket", "b", "--azure-container", "c"], "choose one"),
        (["--retain-finished", "30d", "--s3-bucket", "b"], "lifecycle rule"),
        (["--expiration-sweep-interval", "0"], "--expiration-sweep-interval must be"),
    ],
)
def test_a_wrong_configuration_is_one_line_and_status_2(args: list[str], says: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tusd_py", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tusd-py: error: "), done.stderr
    assert says in lines[0]
    assert "listening" not in done.stdout


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
