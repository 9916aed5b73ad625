"""HEAD: the state a client resumes from."""

from __future__ import annotations

import httpx
import pytest

from tests.protocol.helpers import TUS, assert_plain_error, b64, create, head, patch


async def test_head_of_a_new_upload(client: httpx.AsyncClient) -> None:
    url = await create(client, 42)
    response = await head(client, url)
    assert response.status_code in (200, 204)
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Upload-Length"] == "42"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert "Upload-Defer-Length" not in response.headers
    assert response.content == b""


async def test_head_follows_the_offset(client: httpx.AsyncClient) -> None:
    url = await create(client, 10)
    await patch(client, url, 0, b"1234")
    assert (await head(client, url)).headers["Upload-Offset"] == "4"
    await patch(client, url, 4, b"567890")
    response = await head(client, url)
    assert response.headers["Upload-Offset"] == "10"
    assert response.headers["Upload-Length"] == "10"
    assert response.headers["Cache-Control"] == "no-store"


async def test_head_of_a_deferred_upload(client: httpx.AsyncClient) -> None:
    url = await create(client, None)
    response = await head(client, url)
    assert response.headers["Upload-Defer-Length"] == "1"
    assert response.headers["Upload-Offset"] == "0"
    assert "Upload-Length" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


async def test_head_echoes_metadata(client: httpx.AsyncClient) -> None:
    header = f"filename {b64('a.txt')},filetype {b64('text/plain')},empty"
    url = await create(client, 1, metadata=header)
    assert (await head(client, url)).headers["Upload-Metadata"] == header


@pytest.mark.parametrize("upload_id", ["0123456789abcdef0123456789abcdef", "unknown", "a", "A-b_c"])
async def test_head_of_an_unknown_upload_is_404_without_offset(
    client: httpx.AsyncClient, upload_id: str
) -> None:
    response = await client.head(f"/files/{upload_id}", headers=TUS)
    assert_plain_error(response, 404)
    assert "Upload-Offset" not in response.headers
    assert response.headers["Tus-Resumable"] == "1.0.0"


async def test_head_is_not_allowed_on_the_collection(client: httpx.AsyncClient) -> None:
    response = await client.head("/files/", headers=TUS)
    assert response.status_code == 405
    assert "Upload-Offset" not in response.headers
