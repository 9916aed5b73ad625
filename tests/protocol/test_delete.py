"""DELETE: the termination extension."""

from __future__ import annotations

import httpx

from tests.protocol.conftest import TusServer
from tests.protocol.helpers import TUS, assert_plain_error, create, head, patch, upload


async def test_delete_answers_exactly_204_and_the_upload_is_gone(server: TusServer) -> None:
    client = server.client
    url = await create(client, 10)
    await patch(client, url, 0, b"abc")
    response = await client.delete(url, headers=TUS)
    assert response.status_code == 204  # tus-js-client accepts nothing else
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.content == b""

    state = await head(client, url)
    assert state.status_code in (404, 410)
    assert "Upload-Offset" not in state.headers
    assert (await patch(client, url, 3, b"def")).status_code in (404, 410)
    assert (await client.get(url)).status_code in (404, 410)
    assert server.stored_names() == set()


async def test_delete_a_finished_upload(server: TusServer) -> None:
    url = await upload(server.client, b"finished")
    assert (await server.client.delete(url, headers=TUS)).status_code == 204
    assert (await server.client.get(url)).status_code in (404, 410)
    assert server.stored_names() == set()


async def test_delete_a_deferred_upload(server: TusServer) -> None:
    url = await create(server.client, None)
    await patch(server.client, url, 0, b"x")
    assert (await server.client.delete(url, headers=TUS)).status_code == 204
    assert server.stored_names() == set()


async def test_delete_twice(client: httpx.AsyncClient) -> None:
    url = await create(client, 1)
    assert (await client.delete(url, headers=TUS)).status_code == 204
    response = await client.delete(url, headers=TUS)
    assert response.status_code in (404, 410)
    assert_plain_error(response, response.status_code)


async def test_delete_an_unknown_upload_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete("/files/0123456789abcdef", headers=TUS)
    assert_plain_error(response, 404)


async def test_delete_leaves_other_uploads_alone(client: httpx.AsyncClient) -> None:
    keep = await upload(client, b"keep me")
    drop = await create(client, 3)
    assert (await client.delete(drop, headers=TUS)).status_code == 204
    assert (await client.get(keep)).content == b"keep me"


async def test_delete_on_the_collection_is_not_allowed(client: httpx.AsyncClient) -> None:
    assert_plain_error(await client.delete("/files/", headers=TUS), 405)
