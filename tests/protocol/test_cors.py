"""CORS: what browsers need to run tus-js-client or Uppy against the server."""

from __future__ import annotations

import httpx
import pytest

from tests.protocol.conftest import TusFactory
from tests.protocol.helpers import TUS, create, patch_headers, upload

ORIGIN = "https://app.example"
ALLOWED_METHODS = ["POST", "HEAD", "PATCH", "OPTIONS", "GET", "DELETE", "PUT"]
REQUEST_HEADERS = [
    "Authorization",
    "Origin",
    "X-Requested-With",
    "X-Request-ID",
    "X-HTTP-Method-Override",
    "Content-Type",
    "Upload-Length",
    "Upload-Offset",
    "Tus-Resumable",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Checksum",
    "Upload-Complete",
    "Upload-Draft-Interop-Version",
]
EXPOSED = [
    "Upload-Offset",
    "Location",
    "Upload-Length",
    "Tus-Version",
    "Tus-Resumable",
    "Tus-Max-Size",
    "Tus-Extension",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Expires",
]


def header_list(response: httpx.Response, name: str) -> set[str]:
    return {item.strip().lower() for item in response.headers.get(name, "").split(",") if item}


async def preflight(
    client: httpx.AsyncClient, path: str, method: str, headers: list[str], origin: str = ORIGIN
) -> httpx.Response:
    return await client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": ", ".join(headers),
        },
    )


@pytest.mark.parametrize("method", ALLOWED_METHODS)
async def test_preflight_allows_every_tus_method_and_header(
    client: httpx.AsyncClient, method: str
) -> None:
    url = await create(client, 3)
    for path in ("/files/", url):
        response = await preflight(client, path, method, REQUEST_HEADERS)
        assert response.status_code in (200, 204), response.text
        assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
        assert set(m.lower() for m in ALLOWED_METHODS) <= header_list(
            response, "Access-Control-Allow-Methods"
        )
        assert {h.lower() for h in REQUEST_HEADERS} <= header_list(
            response, "Access-Control-Allow-Headers"
        )
        assert int(response.headers["Access-Control-Max-Age"]) > 0


async def test_responses_expose_the_tus_headers(client: httpx.AsyncClient) -> None:
    created = await client.post("/files/", headers={**TUS, "Upload-Length": "3", "Origin": ORIGIN})
    assert created.status_code == 201
    assert created.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    assert {h.lower() for h in EXPOSED} <= header_list(created, "Access-Control-Expose-Headers")

    url = created.headers["Location"]
    patched = await client.patch(
        url, headers={**patch_headers(0), "Origin": ORIGIN}, content=b"abc"
    )
    assert patched.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    assert "upload-offset" in header_list(patched, "Access-Control-Expose-Headers")


async def test_errors_carry_cors_headers_too(client: httpx.AsyncClient) -> None:
    """Otherwise a browser client cannot even read the status of a 409 or 412 and retry."""
    response = await client.head("/files/0123456789abcdef", headers={**TUS, "Origin": ORIGIN})
    assert response.status_code == 404
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    response = await client.post("/files/", headers={"Origin": ORIGIN, "Upload-Length": "1"})
    assert response.status_code == 412
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)


async def test_download_is_readable_cross_origin(client: httpx.AsyncClient) -> None:
    url = await upload(client, b"abc")
    response = await client.get(url, headers={"Origin": ORIGIN})
    assert response.content == b"abc"
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)


async def test_plain_options_without_preflight_headers_is_tus_discovery(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options("/files/", headers={"Origin": ORIGIN})
    assert response.status_code in (200, 204)
    assert response.headers["Tus-Version"] == "1.0.0"


async def test_configured_origins_restrict(tus_factory: TusFactory) -> None:
    server = await tus_factory(cors_origins=[ORIGIN])
    client = server.client

    allowed = await preflight(client, "/files/", "POST", ["Upload-Length", "Tus-Resumable"])
    assert allowed.status_code in (200, 204)
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN

    denied = await preflight(
        client, "/files/", "POST", ["Upload-Length"], origin="https://evil.example"
    )
    assert denied.status_code >= 400
    assert "Access-Control-Allow-Origin" not in denied.headers

    simple = await client.post(
        "/files/", headers={**TUS, "Upload-Length": "1", "Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in simple.headers
    ok = await client.post("/files/", headers={**TUS, "Upload-Length": "1", "Origin": ORIGIN})
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in ok.headers.get("Vary", "")


async def test_no_cors_headers_when_cors_is_off(tus_factory: TusFactory) -> None:
    server = await tus_factory(cors_origins=[])
    response = await server.client.post(
        "/files/", headers={**TUS, "Upload-Length": "1", "Origin": ORIGIN}
    )
    assert response.status_code == 201
    assert "Access-Control-Allow-Origin" not in response.headers
