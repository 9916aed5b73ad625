"""Parsing and formatting of tus headers; every parser raises a 400 saying what was wrong."""

from __future__ import annotations

import email.utils
import functools
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
    """`epoch` as an HTTP date (whole seconds: the fraction is dropped)."""
    second = int(epoch)
    if 0 <= epoch - second < 0.999999:  # else formatting may round to another second
        return _http_date_of_second(second)
    return email.utils.formatdate(epoch, usegmt=True)


@functools.lru_cache(maxsize=1024)
def _http_date_of_second(second: int) -> str:
    # Formatting takes several µs, and every HEAD and PATCH formats its upload's expiry: the
    # uploads being worked on, and PATCHes within one second, share a few values.
    return email.utils.formatdate(second, usegmt=True)


def check_tus_resumable(value: str | None) -> None:
    if value != TUS_VERSION:
        raise TusError(
            412,
            "unsupported-version",
            f"Tus-Resumable must be {TUS_VERSION}, got {value!r}",
            {"Tus-Version": TUS_VERSION},
        )
