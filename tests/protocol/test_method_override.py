"""X-HTTP-Method-Override: clients behind proxies that only pass GET and POST."""

from __future__ import annotations

import httpx
import pytest

from tests.protocol.helpers import OCTET, TUS, assert_plain_error, create, head, patch_headers


async def test_post_overridden_to_patch(client: httpx.AsyncClient) -> None:
    url = await create(client, 6)
    response = await client.post(
        url, headers={**patch_headers(0), "X-HTTP-Method-Override": "PATCH"}, content=b"abc"
    )
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "3"
    assert (await head(client, url)).headers["Upload-Offset"] == "3"


async def test_override_is_case_insensitive(client: httpx.AsyncClient) -> None:
    url = await create(client, 3)
    response = await client.post(
        url, headers={**patch_headers(0), "X-HTTP-Method-Override": "patch"}, content=b"abc"
    )
    assert response.status_code == 204
    assert (await client.get(url)).content == b"abc"


async def test_post_overridden_to_delete(client: httpx.AsyncClient) -> None:
    url = await create(client, 3)
    response = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 204
    assert (await head(client, url)).status_code in (404, 410)


async def test_post_overridden_to_head(client: httpx.AsyncClient) -> None:
    url = await create(client, 7, metadata="k")
    response = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "HEAD"})
    assert response.status_code in (200, 204)
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Upload-Length"] == "7"
    assert response.headers["Upload-Metadata"] == "k"
    assert response.headers["Cache-Control"] == "no-store"


async def test_overridden_patch_follows_the_patch_rules(client: httpx.AsyncClient) -> None:
    url = await create(client, 6)
    override = {"X-HTTP-Method-Override": "PATCH"}
    wrong_type = await client.post(
        url, headers={**TUS, **override, "Upload-Offset": "0"}, content=b"abc"
    )
    assert_plain_error(wrong_type, 415)
    wrong_offset = await client.post(url, headers={**patch_headers(2), **override}, content=b"abc")
    assert_plain_error(wrong_offset, 409)
    no_version = await client.post(
        url,
        headers={"Content-Type": OCTET, "Upload-Offset": "0", **override},
        content=b"abc",
    )
    assert_plain_error(no_version, 412)
    assert (await head(client, url)).headers["Upload-Offset"] == "0"


async def test_override_to_patch_on_the_collection_does_not_create(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/files/",
        headers={**patch_headers(0), "Upload-Length": "3", "X-HTTP-Method-Override": "PATCH"},
        content=b"abc",
    )
    assert_plain_error(response, 405)
    assert "Location" not in response.headers


@pytest.mark.parametrize("value", ["TRACE", "CONNECT", "", "PATCH, DELETE", "P@TCH"])
async def test_unusable_override_is_rejected(client: httpx.AsyncClient, value: str) -> None:
    url = await create(client, 3)
    response = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": value})
    assert 400 <= response.status_code < 500
    assert_plain_error(response, response.status_code)
    assert (await head(client, url)).status_code == 200


async def test_override_does_not_turn_a_patch_into_a_delete(client: httpx.AsyncClient) -> None:
    url = await create(client, 3)
    response = await client.patch(
        url, headers={**patch_headers(0), "X-HTTP-Method-Override": "DELETE"}, content=b"abc"
    )
    assert response.status_code == 204
    assert (await client.get(url)).content == b"abc"


@pytest.mark.parametrize("override", ["DELETE", "PATCH", "POST"])
async def test_a_get_is_never_overridden(client: httpx.AsyncClient, override: str) -> None:
    url = await create(client, 3)
    await client.patch(url, headers=patch_headers(0), content=b"abc")
    response = await client.get(url, headers={**TUS, "X-HTTP-Method-Override": override})
    assert response.status_code == 200 and response.content == b"abc"
    assert (await head(client, url)).headers["Upload-Offset"] == "3"
