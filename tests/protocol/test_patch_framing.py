"""A body the HTTP layer refused for its framing commits nothing; a client gone keeps its bytes.

uvicorn answers a broken chunked body with its own 400 and hands the app an `http.disconnect`;
our protocol class (tusd_py/connections.py) records the refusal in the scope state first. Here
the app is driven over raw ASGI so that `receive` can play that part on every store (issue 14,
finding 14; the real uvicorn path is tests/reliability/test_findings_on_real_servers.py).
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.types import Message

from tests.protocol.conftest import TusServer
from tests.protocol.helpers import create, head, patch
from tusd_py.protocol.body import refuse_framing


async def chunked_patch_cut_short(
    server: TusServer, url: str, body: bytes, *, refused: bool
) -> int:
    """PATCH `url` at offset 0 with `body` as one chunk of a chunked body that then ends with a
    disconnect, refused for its framing or not; the status the app answered (0: none)."""
    path = httpx.URL(url).path
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PATCH",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"tus-resumable", b"1.0.0"),
            (b"upload-offset", b"0"),
            (b"content-type", b"application/offset+octet-stream"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
        "state": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": True}]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        if refused:
            refuse_framing(scope["state"])
        return {"type": "http.disconnect"}

    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await server.app(scope, receive, send)
    return statuses[0] if statuses else 0


async def test_a_body_refused_for_its_framing_commits_nothing(server: TusServer) -> None:
    client = server.client
    url = await create(client, 100)
    status = await chunked_patch_cut_short(server, url, b"x" * 40, refused=True)
    assert status == 400
    assert (await head(client, url)).headers["Upload-Offset"] == "0"
    assert (await patch(client, url, 0, b"y" * 100)).status_code == 204
    assert (await client.get(url)).content == b"y" * 100


async def test_a_body_cut_short_by_its_client_keeps_its_bytes(server: TusServer) -> None:
    client = server.client
    url = await create(client, 100)
    await chunked_patch_cut_short(server, url, b"x" * 40, refused=False)
    assert (await head(client, url)).headers["Upload-Offset"] == "40"
    assert (await patch(client, url, 40, b"y" * 60)).status_code == 204
    assert (await client.get(url)).content == b"x" * 40 + b"y" * 60
