"""OPTIONS: server discovery, and the Tus-Resumable rules every other method follows."""

from __future__ import annotations

import httpx
import pytest

from tests.protocol.conftest import TusFactory, TusServer
from tests.protocol.helpers import OCTET, TUS, assert_plain_error, create


async def test_options_advertises_version_and_extensions(client: httpx.AsyncClient) -> None:
    response = await client.options("/files/")
    assert response.status_code in (200, 204)
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    extensions = response.headers["Tus-Extension"].split(",")
    for name in ("creation", "creation-with-upload", "creation-defer-length", "termination"):
        assert name in extensions
    assert "expiration" in extensions  # on by default
    assert "Tus-Max-Size" not in response.headers  # unlimited by default


async def test_options_needs_no_tus_resumable_and_ignores_a_wrong_one(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options("/files/", headers={"Tus-Resumable": "0.2.2"})
    assert response.status_code in (200, 204)
    assert response.headers["Tus-Version"] == "1.0.0"


async def test_options_on_an_upload_url(client: httpx.AsyncClient) -> None:
    url = await create(client, 5)
    response = await client.options(url)
    assert response.status_code in (200, 204)
    assert response.headers["Tus-Version"] == "1.0.0"


async def test_options_reports_max_size_when_limited(tus_factory: TusFactory) -> None:
    server = await tus_factory(max_size=1024)
    response = await server.client.options("/files/")
    assert response.headers["Tus-Max-Size"] == "1024"


async def test_options_omits_expiration_when_uploads_never_expire(
    tus_factory: TusFactory,
) -> None:
    server = await tus_factory(expiration=0)
    response = await server.client.options("/files/")
    assert "expiration" not in response.headers["Tus-Extension"].split(",")


@pytest.mark.parametrize("version", [None, "", "0.2.2", "1.0", "1.0.0 ", "2.0.0", "1.0.0,0.2.2"])
@pytest.mark.parametrize("method", ["POST", "HEAD", "PATCH", "DELETE"])
async def test_missing_or_unsupported_tus_resumable_is_412(
    client: httpx.AsyncClient, method: str, version: str | None
) -> None:
    url = await create(client, 3)
    headers = {"Upload-Length": "3", "Content-Type": OCTET, "Upload-Offset": "0"}
    if version is not None:
        headers["Tus-Resumable"] = version
    target = "/files/" if method == "POST" else url
    response = await client.request(method, target, headers=headers, content=b"abc")
    assert_plain_error(response, 412)
    assert response.headers["Tus-Version"] == "1.0.0"
    # Nothing was processed: the upload is still there, untouched.
    state = await client.head(url, headers=TUS)
    assert state.status_code == 200
    assert state.headers["Upload-Offset"] == "0"


async def test_412_on_post_creates_nothing(client: httpx.AsyncClient, server: TusServer) -> None:
    response = await client.post("/files/", headers={"Upload-Length": "3"})
    assert_plain_error(response, 412)
    assert "Location" not in response.headers
    assert server.stored_names() == set()


async def test_every_tus_response_carries_tus_resumable(client: httpx.AsyncClient) -> None:
    url = await create(client, 3)
    responses = [
        await client.head(url, headers=TUS),
        await client.patch(
            url, headers={**TUS, "Content-Type": OCTET, "Upload-Offset": "0"}, content=b"abc"
        ),
        await client.head("/files/0123456789abcdef", headers=TUS),
        await client.patch(url, headers={**TUS, "Content-Type": OCTET, "Upload-Offset": "9"}),
        await client.delete(url, headers=TUS),
    ]
    for response in responses:
        assert response.headers["Tus-Resumable"] == "1.0.0", response
