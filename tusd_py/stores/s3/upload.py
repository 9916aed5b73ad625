"""The S3 side of one upload, as `info.storage` records it, and the names of its objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tusd_py.ids import is_valid_upload_id
from tusd_py.info import UploadInfo
from tusd_py.stores.s3.errors import inconsistent

# Where uploads keep their incomplete parts when their info does not say (`SegmentTails.kind`).
DEFAULT_TAILS = "s3"
# `info.storage["checksum"]` of an upload whose parts carry S3's SHA-256 checksum.
CHECKSUM_SHA256 = "sha256"


def object_key(prefix: str, upload_id: str) -> str:
    # The protocol layer validates ids; this is the last line of defence for key names.
    if not is_valid_upload_id(upload_id):
        raise ValueError(f"invalid upload id {upload_id!r}")
    return prefix + upload_id


def info_key(prefix: str, upload_id: str) -> str:
    return object_key(prefix, upload_id) + ".info"


@dataclass(frozen=True)
class S3Upload:
    """The S3 side of one upload, as recorded in `info.storage` at creation."""

    id: str
    key: str
    multipart_id: str | None  # None: zero-length upload, its empty object was written at once
    part_size: int
    tails: str = DEFAULT_TAILS  # where the incomplete part's committed bytes are kept (tails.py)
    bucket: str | None = None  # None: the store's own (a pre-create hook may choose another)
    # Whether its multipart upload was created with S3's SHA-256 checksum, which every part must
    # then carry (and without which none may): fixed at creation, whatever the option says later.
    checksum: bool = False

    @property
    def where(self) -> dict[str, Any]:
        """The `Bucket` parameter of calls on this upload's objects, when not the store's."""
        return {} if self.bucket is None else {"Bucket": self.bucket}

    @classmethod
    def from_info(cls, info: UploadInfo) -> S3Upload:
        storage = info.storage
        if "part_size" not in storage or "key" not in storage:
            raise inconsistent(info.id, "its info has no S3 storage details")
        return cls(
            id=info.id,
            key=str(storage["key"]),
            multipart_id=storage.get("multipart_upload_id"),
            part_size=int(storage["part_size"]),
            tails=str(storage.get("tails", DEFAULT_TAILS)),
            bucket=storage.get("bucket"),
            checksum=storage.get("checksum") == CHECKSUM_SHA256,
        )

    def segment_prefix(self, number: int | None = None) -> str:
        """Prefix of the segments of part `number`, or of every part."""
        return f"{self.key}.part." if number is None else f"{self.key}.part.{number}."

    def segment_key(self, number: int, position: int) -> str:
        return f"{self.key}.part.{number}.{position}"
