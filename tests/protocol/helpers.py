"""Small request builders shared by the protocol tests."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping

import httpx

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"
ENDPOINT = "/files/"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def patch_headers(offset: int, **extra: str) -> dict[str, str]:
    return {**TUS, "Content-Type": OCTET, "Upload-Offset": str(offset), **extra}


async def create(
    client: httpx.AsyncClient,
    length: int | None = 0,
    *,
    metadata: str | None = None,
    headers: Mapping[str, str] | None = None,
    endpoint: str = ENDPOINT,
    body: bytes | None = None,
) -> str:
    """POST a new upload (length None = deferred), with `body` as its first bytes
    (creation-with-upload) when given; returns the Location, asserting a 201 (and, with a
    body, the offset after it)."""
    sent = {**TUS}
    if length is None:
        sent["Upload-Defer-Length"] = "1"
    else:
        sent["Upload-Length"] = str(length)
    if metadata is not None:
        sent["Upload-Metadata"] = metadata
    if body:
        sent["Content-Type"] = OCTET
    sent.update(headers or {})
    response = await client.post(endpoint, headers=sent, content=body)
    assert response.status_code == 201, response.text
    if body:
        assert response.headers["Upload-Offset"] == str(len(body)), response.headers
    location = response.headers["Location"]
    assert location
    return location


async def patch(
    client: httpx.AsyncClient, url: str, offset: int, data: bytes, **extra: str
) -> httpx.Response:
    return await client.patch(url, headers=patch_headers(offset, **extra), content=data)


async def upload(client: httpx.AsyncClient, data: bytes, *, metadata: str | None = None) -> str:
    """A finished upload holding `data`; returns its URL."""
    url = await create(client, len(data), metadata=metadata)
    if data:
        response = await patch(client, url, 0, data)
        assert response.status_code == 204, response.text
        assert response.headers["Upload-Offset"] == str(len(data))
    return url


async def head(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.head(url, headers=TUS)


async def chunked(*parts: bytes) -> AsyncIterator[bytes]:
    """A body without Content-Length (sent with Transfer-Encoding: chunked)."""
    for part in parts:
        yield part


def assert_plain_error(response: httpx.Response, status: int) -> None:
    """A 4xx/5xx with a human-readable text/plain body, and the tus version on tus responses."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("text/plain"), response.headers
    if response.request.method != "HEAD":
        assert response.text.strip(), "an error response must say what was wrong"
