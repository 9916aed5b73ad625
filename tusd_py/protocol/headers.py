"""Parsing and formatting of tus headers; every parser raises a 400 saying what was wrong."""

from __future__ import annotations

import base64
import binascii
import email.utils
import re

from tusd_py.errors import TusError, bad_request

TUS_VERSION = "1.0.0"
# 2**63 - 1 bytes is far beyond any object store; the cap keeps arithmetic and storage sane.
MAX_UINT = 2**63 - 1
_UINT = re.compile(r"[0-9]{1,19}")
_METADATA_KEY = re.compile(r"[^\s,]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def parse_uint(name: str, value: str) -> int:
    """A non-negative integer in plain decimal (no sign, no spaces, no exponent)."""
    if _UINT.fullmatch(value) is None or int(value) > MAX_UINT:
        raise bad_request(
            f"{name} must be a non-negative integer, got {value!r}", "invalid-" + name.lower()
        )
    return int(value)


def parse_metadata(value: str) -> dict[str, str]:
    """`Upload-Metadata`: comma-separated `key base64value` pairs; the value may be empty."""
    result: dict[str, str] = {}
    if value.strip() == "":
        return result
    for raw_pair in value.split(","):
        pair = raw_pair.strip()
        key, _, encoded = pair.partition(" ")
        if not key or _METADATA_KEY.fullmatch(key) is None:
            raise bad_request(
                f"Upload-Metadata has an empty or malformed key in {pair!r}", "invalid-metadata"
            )
        if " " in encoded:
            raise bad_request(
                f"Upload-Metadata value for {key!r} contains a space", "invalid-metadata"
            )
        if key in result:
            raise bad_request(f"Upload-Metadata has the key {key!r} twice", "invalid-metadata")
        if len(encoded) % 4 or _BASE64.fullmatch(encoded) is None:
            raise bad_request(
                f"Upload-Metadata value for {key!r} is not valid base64", "invalid-metadata"
            )
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(
                f"Upload-Metadata value for {key!r} is not valid base64", "invalid-metadata"
            ) from None
        result[key] = decoded.decode("utf-8", errors="replace")
    return result


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}" if v else k for k, v in metadata.items()
    )


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
