"""The Content-Type and Content-Disposition an upload is served with, from its metadata.

An upload's bytes come from strangers, so nothing is ever described in a way a browser would run
as HTML or script: only media types known to be inert are shown inline, everything else is an
attachment. GET downloads use these, and so do stores that give the stored object its own
headers (the S3 object, read straight from the bucket by whoever comes next).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from tusd_py.info import UploadInfo

_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_INLINE_TYPES = frozenset(
    {
        "text/plain",
        "text/csv",
        "application/pdf",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "audio/mpeg",
        "audio/ogg",
        "audio/wav",
        "audio/webm",
        "audio/aac",
        "audio/flac",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
    }
)


def content_type(info: UploadInfo) -> str:
    declared = (info.metadata.get("filetype") or info.metadata.get("type") or "").strip().lower()
    return declared if _MEDIA_TYPE.fullmatch(declared) else "application/octet-stream"


def response_type(media_type: str) -> str:
    """The Content-Type header a download is served with: text says UTF-8, as Starlette's
    responses do, so a presigned S3 URL answers with the very header the proxied GET sends."""
    return f"{media_type}; charset=utf-8" if media_type.startswith("text/") else media_type


def content_disposition(info: UploadInfo, media_type: str) -> str:
    kind = "inline" if media_type in _INLINE_TYPES else "attachment"
    name = info.metadata.get("filename") or info.metadata.get("name")
    if not name:
        return kind
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
