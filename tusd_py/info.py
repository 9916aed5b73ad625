"""`UploadInfo`: the one value that flows through every layer."""

from __future__ import annotations

import copy
import functools
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tusd_py.metadata import encode_metadata, parse_metadata

ConcatKind = Literal["partial", "final"]


@dataclass
class UploadInfo:
    """Everything known about one upload.

    `offset` is the committed offset: every byte below it is durable in the data store.
    `length` is None while the length is deferred. `metadata_header` is the `Upload-Metadata`
    header exactly as the client sent it (it is echoed verbatim); `metadata` is its decoded form,
    derived from it (or, given alone, encoded into it) and never stored: the JSON keeps the
    header only. Code that changes `metadata` sets `metadata_header` to its encoding.
    `storage` holds the data store's own details (file path, bucket, key, multipart id, part size).
    A final upload lists its partials' ids in `parts`; a partial that an unfinished final has
    claimed names that final in `part_of`, so finishing the partial can complete the final.
    `completed` turns true once the store has finished a fully received upload (S3: the multipart
    upload is completed); until then, requests retry that step (protocol/uploads.py), and
    `completed_at` says when (Unix time) once it has: the `.info` written then tells whoever
    reads the storage that the upload is whole, how large (`offset`), where (`storage`) and since
    when.
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
    completed_at: float | None = None

    def __post_init__(self) -> None:
        if self.metadata_header is None:
            if self.metadata:
                self.metadata_header = encode_metadata(self.metadata)
        elif not self.metadata:
            self.metadata = dict(_decoded_metadata(self.metadata_header))

    @property
    def deferred(self) -> bool:
        return self.length is None

    @property
    def finished(self) -> bool:
        return self.length is not None and self.offset >= self.length

    def copy(self) -> UploadInfo:
        """A copy that shares nothing mutable with this one: a sixth of a JSON round trip's
        CPU (~1 against ~6.5 µs), without `__init__`'s work. The copy of a `stored_form` has
        its metadata decoded again."""
        if self.metadata or self.metadata_header is None:
            return self._copy_with(dict(self.metadata))
        return self._copy_with(dict(_decoded_metadata(self.metadata_header)))

    def stored_form(self) -> UploadInfo:
        """A copy without the decoded metadata, as the JSON keeps it: for holding many in memory
        (binary metadata decodes to a str of 4 bytes a character, 3x the header's size)."""
        return self._copy_with({})

    def _copy_with(self, metadata: dict[str, str]) -> UploadInfo:
        copied = object.__new__(UploadInfo)
        fields = copied.__dict__
        fields.update(self.__dict__)
        fields["metadata"] = metadata
        fields["parts"] = list(self.parts)
        # A store of one's own (docs/stores.md) may keep nested values here: copied too.
        fields["storage"] = {
            key: copy.deepcopy(value) if isinstance(value, (dict, list)) else value
            for key, value in self.storage.items()
        }
        return copied

    def to_dict(self) -> dict[str, Any]:
        """The stored form: every field but `metadata`, which the header already holds (storing
        both doubled the bytes, and a binary value's every odd byte became a 6-byte escape)."""
        data = asdict(self)
        del data["metadata"]
        return data

    def to_json(self) -> str:
        # The fields themselves rather than `asdict`'s deep copy, which json.dumps does not need:
        # every commit without Redis writes this (the in-memory state keeps it).
        return dumps({name: getattr(self, name) for name in _STORED_FIELDS})

    @classmethod
    def from_json(cls, text: str | bytes) -> UploadInfo:
        """Reads `to_json`'s form, and the older one that also stored `metadata` (kept as it is,
        so uploads in flight across an upgrade keep exactly what they had)."""
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})


@functools.lru_cache(maxsize=256)
def _decoded_metadata(header: str) -> tuple[tuple[str, str], ...]:
    # Every state read builds an UploadInfo from the stored header: the uploads being worked on
    # are few, and decoding each pair again cost several µs per HEAD.
    return tuple(parse_metadata(header).items())


_FIELDS = frozenset(UploadInfo.__dataclass_fields__)
_STORED_FIELDS = tuple(sorted(_FIELDS - {"metadata"}))


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)
