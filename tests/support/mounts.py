"""A small tmpfs for tests that need a disk that fills up or turns read-only under a server.

Mounting needs root (or `sudo -n`); where neither works, or with TUSD_RELIABILITY_NO_MOUNT=1,
`small_disk` yields False and the test takes its in-process path or skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path


def privileged(command: list[str]) -> list[str]:
    return command if os.geteuid() == 0 else ["sudo", "-n", *command]


@contextlib.contextmanager
def small_disk(directory: Path, size: int) -> Iterator[bool]:
    """A tmpfs of `size` bytes at `directory`; yields False when none can be mounted."""
    directory.mkdir(parents=True, exist_ok=True)
    no_mount = os.environ.get("TUSD_RELIABILITY_NO_MOUNT", "") not in ("", "0")
    if no_mount or (os.geteuid() != 0 and shutil.which("sudo") is None):
        yield False
        return
    mount = privileged(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs"])
    done = subprocess.run([*mount, str(directory)], capture_output=True, timeout=10)
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(privileged(["umount", "-l", str(directory)]), timeout=10, check=False)


def remount_read_only(directory: Path) -> bool:
    """Turn a `small_disk` read-only (root ignores mode bits, a read-only mount it cannot)."""
    command = privileged(["mount", "-o", "remount,ro", str(directory)])
    return subprocess.run(command, capture_output=True, timeout=10).returncode == 0
