"""`Upload-Metadata`: the tus encoding of an upload's metadata, used by the protocol layer
(parsing what clients send) and by hooks (encoding what a hook changed)."""

from __future__ import annotations

import base64
import binascii
import re

from tusd_py.errors import bad_request

_METADATA_KEY = re.compile(r"[^\s,]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


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


def metadata_problem(key: object, value: object) -> str | None:
    """Why `encode_metadata` could not carry this pair so that `parse_metadata` gives it back
    and the header can be sent (latin-1), or None. Hooks changing metadata are held to it, so
    an upload's header alone is enough to store (`UploadInfo` derives the decoded form)."""
    if not isinstance(key, str) or _METADATA_KEY.fullmatch(key) is None:
        return f"the key {key!r} is empty or has a space or comma"
    try:
        key.encode("latin-1")
    except UnicodeEncodeError:
        return f"the key {key!r} cannot be sent in a header (not latin-1)"
    if not isinstance(value, str):
        return f"the value of {key!r} must be a string"
    try:
        value.encode()
    except UnicodeEncodeError:
        return f"the value of {key!r} is not valid Unicode"
    return None


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}" if v else k for k, v in metadata.items()
    )
