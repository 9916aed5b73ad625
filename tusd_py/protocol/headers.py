"""Parsing and formatting of tus headers; every parser raises a 400 saying what was wrong."""

from __future__ import annotations

import email.utils
import re

from tusd_py.errors import TusError, bad_request

TUS_VERSION = "1.0.0"
# 2**63 - 1 bytes is far beyond any object store; the cap keeps arithmetic and storage sane.
MAX_UINT = 2**63 - 1
_UINT = re.compile(r"[0-9]{1,19}")


def parse_uint(name: str, value: str) -> int:
    """A non-negative integer in plain decimal (no sign, no spaces, no exponent)."""
    if _UINT.fullmatch(value) is None or int(value) > MAX_UINT:
        raise bad_request(
            f"{name} must be a non-negative integer, got {value!r}", "invalid-" + name.lower()
        )
    return int(value)


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


def check_tus_resumable(value: str | None) -> None:
    if value != TUS_VERSION:
        raise TusError(
            412,
            "unsupported-version",
            f"Tus-Resumable must be {TUS_VERSION}, got {value!r}",
            {"Tus-Version": TUS_VERSION},
        )
