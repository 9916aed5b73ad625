"""Upload ids: 128 random bits, URL-safe; anything else in a path never reaches a store."""

from __future__ import annotations

import re
import secrets

# Generous enough for ids set by a pre-create hook, strict enough that an id is always a single,
# harmless path segment and S3 key component: no dots first, no slashes, no NUL, bounded length.
_VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def new_upload_id() -> str:
    return secrets.token_hex(16)


def is_valid_upload_id(value: str) -> bool:
    return _VALID_ID.fullmatch(value) is not None
