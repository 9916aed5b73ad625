"""Checks of a storage name a pre-create hook chose (an S3 key, a path under the upload
directory): hook answers are input like any other, and a name must stay where the store keeps
its uploads, never reach into another upload's files, and survive headers and file systems."""

from __future__ import annotations


def name_problem(name: str, max_bytes: int) -> str | None:
    """Why `name`, a '/'-separated relative name, cannot be used, or None."""
    if len(name.encode("utf-8", errors="surrogatepass")) > max_bytes:
        return f"is longer than {max_bytes} bytes"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in name):
        return "contains a control character"
    if name.startswith("/") or name.endswith("/"):
        return "starts or ends with '/'"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' path segment"
    return None
