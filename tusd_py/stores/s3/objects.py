"""What the store sets on the objects it writes: encryption and storage class on every one, and
on the upload's own object the headers and metadata a reader of the bucket sees.

The upload's object is described once, at CreateMultipartUpload (or the PUT of an empty upload):
S3 gives the completed object what its multipart upload was created with.

tus metadata becomes user metadata (`x-amz-meta-<key>`), which travels in HTTP headers, so both
sides are made ASCII-safe: the key is lower-cased (S3 does that anyway) and the value is
percent-encoded UTF-8 (RFC 3986), leaving printable ASCII other than `%` as it is; a plain
`filename=report.pdf` reads `x-amz-meta-filename: report.pdf`. Keys with characters a header
name cannot hold are percent-encoded the same way. S3 allows 2 KB of user metadata per object:
pairs are taken in key order while they fit, and the rest stay in the `.info` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tusd_py.content_headers import content_disposition, content_type
from tusd_py.info import UploadInfo

if TYPE_CHECKING:
    from tusd_py.config import S3Encryption

# S3's limit on one object's user metadata: the keys and values, as UTF-8.
MAX_USER_METADATA = 2048
# What a header name may hold (RFC 9110 token characters), '%' left out: it is the escape.
_KEY_SAFE = "!#$&'*+-.^_`|~"
# Printable ASCII but '%': kept as it is in values.
_VALUE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%")
# The upload's id on its object, so whoever reads the bucket can find its `.info` and its state.
META_UPLOAD_ID = "tus-upload-id"


def metadata_key(key: str) -> str:
    return quote(key.lower(), safe=_KEY_SAFE)


def metadata_value(value: str) -> str:
    # A leading or trailing space would be lost in the header: escape them too.
    encoded = quote(value, safe=_VALUE_SAFE)
    if encoded.startswith(" "):
        encoded = "%20" + encoded[1:]
    if encoded.endswith(" "):
        encoded = encoded[:-1] + "%20"
    return encoded


def user_metadata(info: UploadInfo) -> dict[str, str]:
    """The upload's tus metadata as S3 user metadata, within S3's 2 KB."""
    result = {META_UPLOAD_ID: info.id}
    used = len(META_UPLOAD_ID) + len(info.id)
    for key in sorted(info.metadata):
        name, value = metadata_key(key), metadata_value(info.metadata[key])
        if name in result or used + len(name) + len(value) > MAX_USER_METADATA:
            continue  # a key differing only in case, or no room: the `.info` keeps it
        result[name] = value
        used += len(name) + len(value)
    return result


@dataclass(frozen=True)
class ObjectSettings:
    """Encryption and storage class, as configured (`--s3-sse`, `--s3-storage-class`)."""

    sse: S3Encryption | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = None

    def __post_init__(self) -> None:
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise ValueError("a KMS key id needs server-side encryption aws:kms")

    def every_object(self) -> dict[str, Any]:
        """Parameters of every PutObject and CreateMultipartUpload the store sends."""
        params: dict[str, Any] = {}
        if self.sse:
            params["ServerSideEncryption"] = self.sse
        if self.sse_kms_key_id:
            params["SSEKMSKeyId"] = self.sse_kms_key_id
        if self.storage_class:
            params["StorageClass"] = self.storage_class
        return params


def describe_object(info: UploadInfo) -> dict[str, Any]:
    """Parameters that create the upload's own object (its multipart upload): how it reads."""
    media_type = content_type(info)
    return {
        "ContentType": media_type,
        "ContentDisposition": content_disposition(info, media_type),
        "Metadata": user_metadata(info),
    }
