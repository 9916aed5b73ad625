"""Where the tus endpoint lives, as the client sees it: used for `Location`."""

from __future__ import annotations

import re

from starlette.requests import Request

_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_FORWARDED_PAIR = re.compile(r'\s*(?P<key>[A-Za-z]+)=(?P<value>"[^"]*"|[^;,\s"]*)\s*')


def _forwarded(header: str) -> dict[str, str]:
    """The first element of an RFC 7239 `Forwarded` header: the hop closest to the client.

    An element that does not parse as a whole is ignored rather than half-trusted.
    """
    pairs: dict[str, str] = {}
    for part in header.split(",", 1)[0].split(";"):
        match = _FORWARDED_PAIR.fullmatch(part)
        if match is None:
            return {}
        pairs[match["key"].lower()] = match["value"].strip('"')
    return pairs


def _server_host(request: Request) -> str:
    server = request.scope.get("server")
    if not server or server[1] is None:  # unknown, or a Unix socket
        return "localhost"
    name, port = server
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


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
        host = _server_host(request)
    root = request.scope.get("root_path", "").rstrip("/")
    return f"{scheme}://{host}{root}/"
