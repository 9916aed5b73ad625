"""The request being served right now, for the code that runs on its behalf without being handed
it: log lines (its request and upload ids) and hooks (the request they describe, the response
changes they ask for). `ObserveMiddleware` sets it for every HTTP request."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.types import Scope

if TYPE_CHECKING:
    from tusd_py.hooks.types import HTTPResponse


@dataclass(slots=True, eq=False)
class RequestContext:
    request_id: str
    scope: Scope
    upload_id: str | None = None
    # Merged into the response by the middleware: what blocking hooks asked to send.
    response_changes: HTTPResponse | None = None
    # Appended to the request's access line (text) and added to its fields (JSON): how a body
    # that ended early ended, for instance.
    access_note: str | None = None
    access_fields: dict[str, object] = field(default_factory=dict)

    def change_response(self, changes: HTTPResponse | None) -> None:
        if changes is not None:
            base = self.response_changes
            self.response_changes = changes if base is None else base.merged_with(changes)

    def note(self, text: str, **fields: object) -> None:
        """Say `text` (and log `fields`) on this request's access line."""
        self.access_note = text if self.access_note is None else f"{self.access_note}; {text}"
        self.access_fields.update(fields)


current_request: ContextVar[RequestContext | None] = ContextVar("tusd_request", default=None)


def bind_upload(upload_id: str) -> None:
    """Mark the current request as being about `upload_id` (for the log lines that follow)."""
    ctx = current_request.get()
    if ctx is not None:
        ctx.upload_id = upload_id
