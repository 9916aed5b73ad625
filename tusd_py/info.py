"""`UploadInfo`: the one value that flows through every layer."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ConcatKind = Literal["partial", "final"]


@dataclass
class UploadInfo:
    """Everything known about one upload.

    `offset` is the committed offset: every byte below it is durable in the data store.
    `length` is None while the length is deferred. `metadata_header` is the `Upload-Metadata`
    header exactly as the client sent it (it is echoed verbatim); `metadata` is its decoded form.
    `storage` holds the data store's own details (file path, bucket, key, multipart id, part size).
    A final upload lists its partials' ids in `parts`; a partial that an unfinished final has
    claimed names that final in `part_of`, so finishing the partial can complete the final.
    `completed` turns true once the store has finished a fully received upload (S3: the multipart
    upload is completed); until then, requests retry that step (protocol/uploads.py).
    """

    id: str
    length: int | None
    offset: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    metadata_header: str | None = None
    created_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    concat: ConcatKind | None = None
    parts: list[str] = field(default_factory=list)
    part_of: str | None = None
    storage: dict[str, Any] = field(default_factory=dict)
    completed: bool = False

    @property
    def deferred(self) -> bool:
        return self.length is None

    @property
    def finished(self) -> bool:
        return self.length is not None and self.offset >= self.length

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> UploadInfo:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
