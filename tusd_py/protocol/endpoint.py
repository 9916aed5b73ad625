"""The tus endpoint as an ASGI app: picks the handler, maps every `TusError` to a response."""

from __future__ import annotations

from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tusd_py.errors import TusError
from tusd_py.failures import log_server_error, log_unexpected
from tusd_py.ids import is_valid_upload_id
from tusd_py.protocol.access import check_access
from tusd_py.protocol.body import body_left_unread, early_end, opened_body
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.create import handle_create
from tusd_py.protocol.delete import handle_delete
from tusd_py.protocol.download import handle_download
from tusd_py.protocol.head import handle_head
from tusd_py.protocol.headers import check_tus_resumable
from tusd_py.protocol.ietf import INTEROP_HEADER, handle_ietf
from tusd_py.protocol.linger import respond_and_drain
from tusd_py.protocol.options import handle_options
from tusd_py.protocol.patch import handle_patch
from tusd_py.protocol.request import TusRequest
from tusd_py.protocol.responses import error_response
from tusd_py.request_context import current_request

_OVERRIDABLE = frozenset({"PATCH", "DELETE", "HEAD", "GET", "POST", "OPTIONS"})
_COLLECTION_METHODS = "POST, OPTIONS"
_UPLOAD_METHODS = "HEAD, PATCH, DELETE, GET, OPTIONS"


def effective_method(request: Request) -> str:
    """The request's method, or the one named by `X-HTTP-Method-Override` on a POST.

    Only a POST, as tusd does: a GET is what links, prefetchers and `<img>` tags send, and must
    never delete or change an upload."""
    method = request.method
    override = request.headers.get("x-http-method-override")
    if override is not None and method == "POST":
        override = override.strip().upper()
        if override not in _OVERRIDABLE:
            raise TusError(
                400, "invalid-method-override", f"cannot override the method with {override!r}"
            )
        return override
    return method


def logged_method(request: Request) -> str:
    """The method as the access line names it: a POST overridden to PATCH is a PATCH."""
    try:
        return effective_method(request)
    except TusError:
        return request.method


def expects_continue(request: Request) -> bool:
    """The client waits for `100 Continue` before sending its body; none was sent if the body
    was never read, so there is nothing to drain."""
    reader = opened_body(request)
    waiting = "100-continue" in request.headers.get("expect", "").lower()
    return waiting and (reader is None or reader.received == 0)


def note_early_end(request: Request, response: Response) -> None:
    """A body cut short (the client went away, a handover, ...) says so on the access line,
    with the bytes received and the offset committed: what the client resumes from."""
    reader = opened_body(request)
    ctx = current_request.get()
    if reader is None or ctx is None or (ending := early_end(reader)) is None:
        return
    offset = response.headers.get("upload-offset")
    committed = f", offset {offset} committed" if offset is not None else ""
    ctx.note(
        f"body ended early ({ending}) after {reader.received} bytes{committed}",
        body_end=ending,
        body_received=reader.received,
        upload_offset=None if offset is None else int(offset),
    )


def method_not_allowed(method: str, allowed: str) -> TusError:
    return TusError(405, "method-not-allowed", f"{method} is not allowed here", {"Allow": allowed})


class TusEndpoint:
    def __init__(self, ctx: TusContext) -> None:
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = TusRequest(scope, receive)
        try:
            response = await self.dispatch(request)
        except TusError as error:
            if error.status >= 500:
                log_server_error(error, logged_method(request), request.url.path)
            response = error_response(error)
        except Exception as exc:
            log_unexpected(exc, logged_method(request), request.url.path)
            response = error_response(
                TusError(
                    500, "internal-error", "the server failed unexpectedly; the upload is unchanged"
                )
            )
        note_early_end(request, response)
        if body_left_unread(request):
            # Otherwise uvicorn keeps the connection and the client goes on sending a body nobody
            # reads (after a handover, or an error answered before the body).
            response.headers["Connection"] = "close"
            if not expects_continue(request) and type(response) is Response:
                await respond_and_drain(response, receive, send)
                return
        await response(scope, receive, send)

    async def dispatch(self, request: Request) -> Response:
        ctx = self.ctx
        method = effective_method(request)
        sub_path = get_route_path(request.scope).lstrip("/")
        if INTEROP_HEADER in request.headers:  # the IETF draft, not tus 1.0.0
            return await handle_ietf(ctx, request, method, sub_path)
        if method == "OPTIONS":
            return await handle_options(ctx)
        if sub_path == "":
            if method != "POST":
                raise method_not_allowed(method, _COLLECTION_METHODS)
            check_tus_resumable(request.headers.get("tus-resumable"))
            return await handle_create(ctx, request)
        if not is_valid_upload_id(sub_path):
            raise TusError(404, "upload-not-found", "the path does not name an upload")
        if method == "GET":
            await check_access(ctx, sub_path, method)
            return await handle_download(ctx, request, sub_path)
        if method not in ("HEAD", "PATCH", "DELETE"):
            raise method_not_allowed(method, _UPLOAD_METHODS)
        check_tus_resumable(request.headers.get("tus-resumable"))
        await check_access(ctx, sub_path, method)  # before any lock, body or change
        if method == "HEAD":
            return await handle_head(ctx, sub_path, request)
        if method == "PATCH":
            return await handle_patch(ctx, request, sub_path)
        return await handle_delete(ctx, sub_path)


class BareBasePath:
    """Serves the endpoint's own path without its trailing slash (`/files` as well as `/files/`).

    Clients that do not follow redirects (tus-js-client under Node) POST to the bare path; this
    gives the request the `root_path` a Mount would have given it, so `Location` comes out right.
    """

    def __init__(self, endpoint: TusEndpoint, mount_path: str) -> None:
        self.endpoint = endpoint
        self.mount_path = mount_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = {**scope, "root_path": scope.get("root_path", "") + self.mount_path}
        await self.endpoint(scope, receive, send)
