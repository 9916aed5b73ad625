"""The values hooks exchange, and their JSON form.

The JSON form follows tusd v2's hook request and response (`{"Type": ..., "Event": {"Upload":
..., "HTTPRequest": ...}}` in, `{"HTTPResponse": ..., "RejectUpload": ..., ...}` out), so a
receiver written for tusd works unchanged. Python hooks get and return the typed values.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from starlette.types import Scope

from tusd_py.ids import is_valid_upload_id
from tusd_py.info import UploadInfo
from tusd_py.metadata import metadata_problem


class HookType(StrEnum):
    PRE_CREATE = "pre-create"
    POST_CREATE = "post-create"
    POST_RECEIVE = "post-receive"
    PRE_FINISH = "pre-finish"
    POST_FINISH = "post-finish"
    PRE_TERMINATE = "pre-terminate"
    POST_TERMINATE = "post-terminate"
    PRE_ACCESS = "pre-access"

    @property
    def blocking(self) -> bool:
        """pre-* hooks run while the client waits; post-* hooks are queued (runner.py)."""
        return self.value.startswith("pre-")


# tusd's defaults: pre-finish and pre-terminate cost a round trip on every upload, so they are
# opt-in there and here; pre-access (tusd PR #1077) costs one on every HEAD, PATCH, GET and
# DELETE, and is opt-in too.
DEFAULT_HTTP_EVENTS: tuple[HookType, ...] = (
    HookType.PRE_CREATE,
    HookType.POST_CREATE,
    HookType.POST_RECEIVE,
    HookType.POST_TERMINATE,
    HookType.POST_FINISH,
)


class HookError(Exception):
    """A hook could not be run, failed, or answered something unusable."""


def parse_hook_types(names: str | list[str] | tuple[str, ...]) -> tuple[HookType, ...]:
    """'pre-create,post-finish' (or a list) -> hook types; '' or [] enables none."""
    items = names.split(",") if isinstance(names, str) else list(names)
    result: list[HookType] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            result.append(HookType(item))
        except ValueError:
            known = ", ".join(t.value for t in HookType)
            raise ValueError(f"unknown hook event {item!r} (known: {known})") from None
    return tuple(dict.fromkeys(result))


@dataclass
class HTTPRequestInfo:
    """The client request that caused a hook; header names in Go's canonical form."""

    method: str = ""
    uri: str = ""
    remote_addr: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_scope(cls, scope: Scope) -> HTTPRequestInfo:
        """The ASGI request as hooks describe it (tusd's `HTTPRequest`)."""
        headers: dict[str, list[str]] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name = canonical_header(raw_name.decode("latin-1"))
            headers.setdefault(name, []).append(raw_value.decode("latin-1"))
        path = scope.get("raw_path") or scope.get("path", "").encode()
        query = scope.get("query_string", b"")
        uri = path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        client = scope.get("client")
        return cls(
            method=scope.get("method", ""),
            uri=uri,
            remote_addr=f"{client[0]}:{client[1]}" if client else "",
            headers=headers,
        )

    def header(self, name: str) -> str | None:
        values = self.headers.get(canonical_header(name))
        return values[0] if values else None

    def to_json(self) -> dict[str, Any]:
        return {
            "Method": self.method,
            "URI": self.uri,
            "RemoteAddr": self.remote_addr,
            "Header": self.headers,
        }


def canonical_header(name: str) -> str:
    """'x-request-id' -> 'X-Request-Id', as Go's http.CanonicalHeaderKey writes names."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


AccessMode = Literal["read", "write"]


@dataclass
class AccessInfo:
    """pre-access only: how the request uses the uploads it names (tusd PR #1077's `Access`).

    `mode` is "read" for HEAD and GET, "write" for PATCH and DELETE; `files` are the uploads
    the request touches (a list, as a concatenation touches several; one upload here)."""

    mode: AccessMode
    files: list[UploadInfo]


@dataclass
class HookEvent:
    """What a hook is told: which hook, a snapshot of the upload, and the client request."""

    type: HookType
    upload: UploadInfo
    request: HTTPRequestInfo
    storage: dict[str, Any] | None = None  # where the bytes live, as tusd describes it
    access: AccessInfo | None = None  # pre-access only

    def to_json(self) -> dict[str, Any]:
        pre_create = self.type is HookType.PRE_CREATE
        event: dict[str, Any] = {
            "Upload": self._upload_json(self.upload, hide_id=pre_create),
            "HTTPRequest": self.request.to_json(),
        }
        if self.access is not None:
            event["Access"] = {
                "Mode": self.access.mode,
                "Files": [self._upload_json(info) for info in self.access.files],
            }
        return {"Type": self.type.value, "Event": event}

    def _upload_json(self, info: UploadInfo, *, hide_id: bool = False) -> dict[str, Any]:
        return {
            # tusd has no id before creation; receivers may rely on that.
            "ID": "" if hide_id else info.id,
            "Size": info.length or 0,
            "SizeIsDeferred": info.length is None,
            "Offset": info.offset,
            "MetaData": dict(info.metadata),
            "IsPartial": info.concat == "partial",
            "IsFinal": info.concat == "final",
            "PartialUploads": list(info.parts) if info.parts else None,
            # The store describes the event's own upload; nothing exists before creation.
            "Storage": self.storage if not hide_id and info.id == self.upload.id else None,
        }


def snapshot(info: UploadInfo) -> UploadInfo:
    """A copy a hook can keep or change without touching the upload being served."""
    return copy.deepcopy(info)


@dataclass
class HTTPResponse:
    """Changes to the response the client gets: a zero status or empty body keeps the server's."""

    status_code: int = 0
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def merged_with(self, later: HTTPResponse | None) -> HTTPResponse:
        if later is None:
            return self
        return HTTPResponse(
            later.status_code or self.status_code,
            later.body or self.body,
            {**self.headers, **later.headers},
        )


# What `ChangeFileInfo.Storage` may name, as tusd calls it; each store takes some of them.
STORAGE_FIELDS = frozenset({"Key", "Bucket", "Path"})


@dataclass
class FileInfoChanges:
    """pre-create only: a custom upload id, replacement metadata, where the upload's bytes go
    (`Storage`: "Key" and "Bucket" for S3, checked by the store)."""

    id: str | None = None
    metadata: dict[str, str] | None = None
    storage: dict[str, str] | None = None


@dataclass
class HookResponse:
    http_response: HTTPResponse | None = None
    reject_upload: bool = False  # pre-create
    change_file_info: FileInfoChanges | None = None  # pre-create
    stop_upload: bool = False  # post-receive
    reject_termination: bool = False  # pre-terminate
    reject_access: bool = False  # pre-access

    @property
    def rejects(self) -> bool:
        return self.reject_upload or self.reject_termination or self.reject_access

    @classmethod
    def from_json(cls, data: object) -> HookResponse:
        """Parse a receiver's answer; raises `HookError` saying what is wrong with it."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise HookError(f"the hook response must be a JSON object, got {type(data).__name__}")
        http = data.get("HTTPResponse")
        change = data.get("ChangeFileInfo")
        return cls(
            http_response=None if http is None else _http_response(http),
            reject_upload=_bool(data, "RejectUpload"),
            change_file_info=None if change is None else _file_info_changes(change),
            stop_upload=_bool(data, "StopUpload"),
            reject_termination=_bool(data, "RejectTermination"),
            reject_access=_bool(data, "RejectAccess"),
        )

    @classmethod
    def from_answer(cls, answer: bytes, source: str) -> HookResponse:
        """Parse the JSON text `source` ("the receiver", "the hook's output") answered; empty
        means "nothing to change", as many post-* hooks answer."""
        if not answer.strip():
            return cls()
        try:
            data = json.loads(answer)
        except ValueError:
            raise HookError(f"{source} is not JSON: {snippet(answer)}") from None
        return cls.from_json(data)

    def validate(self) -> None:
        """Check the parts that reach storage or the wire; raises `HookError`."""
        change = self.change_file_info
        if change is not None:
            if change.id is not None and not is_valid_upload_id(change.id):
                raise HookError(
                    f"ChangeFileInfo.ID {change.id!r} is not a valid upload id (1-128 characters "
                    "of A-Z a-z 0-9 _ -, starting with a letter or digit)"
                )
            if change.metadata is not None:
                for key, value in change.metadata.items():
                    problem = metadata_problem(key, value)
                    if problem is not None:
                        raise HookError(f"ChangeFileInfo.MetaData: {problem}")
            for name, value in (change.storage or {}).items():
                if name not in STORAGE_FIELDS:
                    raise HookError(
                        f"ChangeFileInfo.Storage has the unknown field {name!r} (it may set "
                        f"{', '.join(sorted(STORAGE_FIELDS))})"
                    )
                if not isinstance(value, str) or not value:
                    raise HookError(f"ChangeFileInfo.Storage.{name} must be a non-empty string")
        http = self.http_response
        if http is not None:
            if http.status_code and not 100 <= http.status_code <= 599:
                raise HookError(f"HTTPResponse.StatusCode {http.status_code} is not an HTTP status")
            for name, value in http.headers.items():
                if not _token(name) or any(c in value for c in "\r\n\0"):
                    raise HookError(f"HTTPResponse.Header has an invalid header {name!r}")


def snippet(answer: bytes) -> str:
    """The start of an answer, quoted, for error messages."""
    text = answer[:200].decode("utf-8", errors="replace").strip()
    return repr(text) if text else "(empty body)"


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise HookError(f"{key} must be true or false, got {value!r}")
    return value


def _http_response(data: object) -> HTTPResponse:
    if not isinstance(data, Mapping):
        raise HookError("HTTPResponse must be an object")
    status = data.get("StatusCode") or 0
    body = data.get("Body") or ""
    headers = data.get("Header") or {}
    if not isinstance(status, int) or isinstance(status, bool):
        raise HookError(f"HTTPResponse.StatusCode must be an integer, got {status!r}")
    if not isinstance(body, str):
        raise HookError("HTTPResponse.Body must be a string")
    if not isinstance(headers, Mapping):
        raise HookError("HTTPResponse.Header must be an object")
    flat: dict[str, str] = {}
    for name, value in headers.items():
        # tusd sends strings; accept Go-style lists too, as some receivers echo http.Header.
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            value = ", ".join(value)
        if not isinstance(value, str):
            raise HookError(f"HTTPResponse.Header[{name!r}] must be a string")
        flat[str(name)] = value
    return HTTPResponse(status, body, flat)


def _file_info_changes(data: object) -> FileInfoChanges:
    if not isinstance(data, Mapping):
        raise HookError("ChangeFileInfo must be an object")
    upload_id = data.get("ID") or None
    metadata = data.get("MetaData")
    if upload_id is not None and not isinstance(upload_id, str):
        raise HookError("ChangeFileInfo.ID must be a string")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise HookError("ChangeFileInfo.MetaData must be an object")
    storage = data.get("Storage")
    if storage is not None:
        if not isinstance(storage, Mapping):
            raise HookError("ChangeFileInfo.Storage must be an object")
        storage = dict(storage)
    return FileInfoChanges(upload_id, None if metadata is None else dict(metadata), storage)


def _token(name: str) -> bool:
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name)
