"""HEAD: where an upload stands, so a client knows where to resume."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusd_py.info import UploadInfo
from tusd_py.protocol.concat import concat_headers, try_complete_final
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.headers import http_date
from tusd_py.protocol.responses import tus_response
from tusd_py.protocol.uploads import current_info
from tusd_py.protocol.urls import endpoint_url


def upload_headers(info: UploadInfo, endpoint: str | None = None) -> dict[str, str]:
    """Headers that describe an upload's state (HEAD, and reused by other handlers)."""
    headers = {"Upload-Offset": str(info.offset), "Cache-Control": "no-store"}
    if info.concat == "final" and not info.finished:
        del headers["Upload-Offset"]  # the protocol: no offset until the final is assembled
    if info.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(info.length)
    if info.metadata_header is not None:
        headers["Upload-Metadata"] = info.metadata_header
    if info.expires_at is not None and not info.finished:
        headers["Upload-Expires"] = http_date(info.expires_at)
    headers.update(concat_headers(info, endpoint))
    return headers


async def handle_head(ctx: TusContext, upload_id: str, request: Request | None = None) -> Response:
    info = await current_info(ctx, upload_id)
    if info.concat == "final" and not info.finished:
        info = await try_complete_final(ctx, upload_id) or info  # retries a failed assembly
    endpoint = None
    if request is not None and info.concat == "final":  # only a final's parts are URLs
        endpoint = endpoint_url(request, ctx.config.behind_proxy)
    return tus_response(200, upload_headers(info, endpoint))
