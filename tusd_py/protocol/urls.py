"""Where the tus endpoint lives, as the client sees it: used for `Location`."""

from __future__ import annotations

import re

from starlette.requests import Request

_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_FORWARDED_PAIR = re.compile(r'(?P<key>[A-Za-z]+)=(?P<value>"[^"]*"|[^;,\s]*)')


def _forwarded(header: str) -> dict[str, str]:
    """The first element of an RFC 7239 `Forwarded` header: the hop closest to the client."""
    first = header.split(",", 1)[0]
    return {m["key"].lower(): m["value"].strip('"') for m in _FORWARDED_PAIR.finditer(first)}


def endpoint_url(request: Request, behind_proxy: bool) -> str:
    """Absolute URL of the endpoint, ending in '/'; honours proxy headers only when trusted."""
    scheme = request.url.scheme
    host = request.headers.get("host", "")
    if behind_proxy:
        fwd = _forwarded(request.headers.get("forwarded", ""))
        proto = fwd.get("proto") or request.headers.get("x-forwarded-proto", "")
        proto = proto.split(",", 1)[0].strip().lower()
        if proto in ("http", "https"):
            scheme = proto
        forwarded_host = fwd.get("host") or request.headers.get("x-forwarded-host", "")
        forwarded_host = forwarded_host.split(",", 1)[0].strip()
        if _HOST.fullmatch(forwarded_host):
            host = forwarded_host
    if not _HOST.fullmatch(host):
        server = request.scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    root = request.scope.get("root_path", "").rstrip("/")
    return f"{scheme}://{host}{root}/"


def route_path(request: Request) -> str:
    """The path below the endpoint's mount point ('' or '/' for the endpoint itself)."""
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
