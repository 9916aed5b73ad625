"""tus over HTTP onto Azure Blob Storage (Azurite): `create_app(Config(azure_container=...))`
in-process, alone and as two instances sharing an upload through Redis.

The store itself is covered by test_azure_store.py; these follow whole uploads through the app
and check what lands in the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

import httpx
import pytest

from tests.support.azurite import AzuriteServer, unique_container
from tests.support.in_process import app_client, store_of
from tests.support.payloads import payload
from tests.support.servers import RedisServer, unique_prefix
from tusd_py.config import Config
from tusd_py.expiry import sweep_once
from tusd_py.hooks import HookEvent
from tusd_py.stores.azure import AzureStore

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


@pytest.fixture(autouse=True)
def credentials(azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)


def tus_app(
    azurite: AzuriteServer, container: str, **options: Any
) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    hooks = options.pop("hooks", None)
    config = Config(azure_container=container, azure_endpoint=azurite.endpoint, **options)
    return app_client(config, hooks=hooks)


async def create(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes | None = None
) -> str:
    """POST an upload, with `body` as its first bytes (creation-with-upload) when given."""
    sent = {**(OCTETS if body else TUS), **headers}
    response = await client.post("/files/", headers=sent, content=body)
    assert response.status_code == 201, response.text
    if body:
        assert response.headers["Upload-Offset"] == str(len(body)), response.headers
    return response.headers["Location"]


async def patch(client: httpx.AsyncClient, url: str, offset: int, body: bytes) -> None:
    response = await client.patch(
        url, headers={**OCTETS, "Upload-Offset": str(offset)}, content=body
    )
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(offset + len(body))


async def blob_names(client: httpx.AsyncClient) -> set[str]:
    """The uploads' blobs (the sweep's index under .index/ left out)."""
    container = store_of(client, AzureStore)._containers()
    names = {str(item.name) async for item in container.list_blobs()}
    return {name for name in names if not name.startswith(".index/")}


async def test_an_upload_in_chunks_lands_as_one_blob(azurite: AzuriteServer) -> None:
    events: list[HookEvent] = []
    data = payload(3 * 1024**2 + 17)
    async with tus_app(azurite, unique_container(), hooks={"post-finish": events.append}) as tus:
        options = await tus.options("/files/", headers=TUS)
        extensions = set(options.headers["Tus-Extension"].split(","))
        assert {"creation-defer-length", "concatenation", "termination", "expiration"} <= extensions
        url = await create(tus, {"Upload-Length": str(len(data))})
        upload_id = url.rsplit("/", 1)[-1]
        for offset in range(0, len(data), 1024**2):
            await patch(tus, url, offset, data[offset : offset + 1024**2])
        head = await tus.head(url, headers=TUS)
        assert head.headers["Upload-Offset"] == str(len(data))
        got = await tus.get(url)
        assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()
        ranged = await tus.get(url, headers={"Range": "bytes=1000-1999"})
        assert ranged.status_code == 206 and ranged.content == data[1000:2000]
        assert await blob_names(tus) == {upload_id, f"{upload_id}.info"}
        (event,) = events
        assert event.storage == {
            "Type": "azurestore",
            "Container": store_of(tus, AzureStore).container,
            "Key": upload_id,
        }
        response = await tus.delete(url, headers=TUS)
        assert response.status_code == 204
        assert await blob_names(tus) == set()


async def test_creation_with_upload_and_deferred_length(azurite: AzuriteServer) -> None:
    data = payload(100_000)
    async with tus_app(azurite, unique_container()) as tus:
        url = await create(
            tus, {"Upload-Defer-Length": "1", "Content-Type": OCTETS["Content-Type"]}
        )
        await patch(tus, url, 0, data[:40_000])
        response = await tus.patch(
            url,
            headers={**OCTETS, "Upload-Offset": "40000", "Upload-Length": str(len(data))},
            content=data[40_000:],
        )
        assert response.status_code == 204, response.text
        assert (await tus.get(url)).content == data
        empty = await create(tus, {"Upload-Length": "0"})
        got = await tus.get(empty)
        assert got.status_code == 200 and got.content == b""


async def test_concatenation(azurite: AzuriteServer) -> None:
    pieces = [payload(70_000, 1), payload(5, 2), payload(300_000, 3)]
    async with tus_app(azurite, unique_container()) as tus:
        urls = []
        for piece in pieces:
            url = await create(tus, {"Upload-Length": str(len(piece)), "Upload-Concat": "partial"})
            await patch(tus, url, 0, piece)
            urls.append(url)
        paths = " ".join(url.removeprefix("http://tus.test") for url in urls)
        final = await create(tus, {"Upload-Concat": f"final;{paths}"})
        head = await tus.head(final, headers=TUS)
        assert head.headers["Upload-Length"] == str(sum(map(len, pieces)))
        assert (await tus.get(final)).content == b"".join(pieces)


async def test_expired_uploads_are_swept(azurite: AzuriteServer) -> None:
    async with tus_app(azurite, unique_container(), expiration=0.5) as tus:
        # Each written by its creation request: a creation and a PATCH 0.5 s apart can
        # straddle the expiry on a slow machine.
        url = await create(tus, {"Upload-Length": "10"}, b"01234")
        finished = await create(tus, {"Upload-Length": "1"}, b"x")
        await asyncio.sleep(0.6)
        assert await sweep_once(tus.app.state.tus) == 1  # type: ignore[attr-defined]
        assert (await tus.head(url, headers=TUS)).status_code in (404, 410)
        assert (await tus.get(finished)).content == b"x"


async def test_two_instances_share_an_upload_through_redis(
    azurite: AzuriteServer, redis: RedisServer
) -> None:
    container, prefix = unique_container(), unique_prefix()
    data = payload(2 * 1024**2 + 3)
    shared = {"redis_url": redis.url, "redis_prefix": prefix}
    async with (
        tus_app(azurite, container, **shared) as first,
        tus_app(azurite, container, **shared) as second,
    ):
        url = await create(first, {"Upload-Length": str(len(data))})
        await patch(first, url, 0, data[: 1024**2])
        head = await second.head(url, headers=TUS)
        assert head.headers["Upload-Offset"] == str(1024**2)
        await patch(second, url, 1024**2, data[1024**2 :])
        got = await first.get(url)
        assert got.content == data
        response = await second.delete(url, headers=TUS)
        assert response.status_code == 204
        assert (await first.head(url, headers=TUS)).status_code in (404, 410)


async def test_ready_reports_the_container(azurite: AzuriteServer) -> None:
    async with tus_app(azurite, unique_container()) as tus:
        assert (await tus.get("/ready")).status_code == 200
