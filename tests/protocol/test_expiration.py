"""The expiration extension: Upload-Expires, expired uploads, and the sweep that removes them."""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime

import httpx
import pytest
from redis import Redis

from tests.protocol.conftest import TusFactory, TusServer
from tests.protocol.helpers import OCTET, TUS, assert_plain_error, create, head, patch, upload
from tusd_py.expiry import sweep_once
from tusd_py.redis_client import upload_key

SHORT = 0.5  # seconds an upload lives in the tests that wait for it to expire


def expires_epoch(response: httpx.Response) -> float:
    value = response.headers["Upload-Expires"]
    assert value.endswith(" GMT"), value  # RFC 9110 IMF-fixdate
    return parsedate_to_datetime(value).timestamp()


async def test_post_patch_and_head_announce_the_expiry(tus_factory: TusFactory) -> None:
    server = await tus_factory(expiration=3600)
    client = server.client
    created = await client.post("/files/", headers={**TUS, "Upload-Length": "10"})
    assert abs(expires_epoch(created) - (time.time() + 3600)) < 5
    url = created.headers["Location"]

    state = await head(client, url)
    assert abs(expires_epoch(state) - expires_epoch(created)) < 2

    await asyncio.sleep(1.05)  # the header has one-second resolution
    patched = await patch(client, url, 0, b"abc")
    assert expires_epoch(patched) > expires_epoch(created)  # activity extends the lifetime


async def test_creation_with_upload_announces_the_expiry(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/files/", headers={**TUS, "Upload-Length": "10", "Content-Type": OCTET}, content=b"ab"
    )
    assert response.status_code == 201
    expires_epoch(response)


async def test_finished_uploads_do_not_expire(client: httpx.AsyncClient) -> None:
    empty = await client.post("/files/", headers={**TUS, "Upload-Length": "0"})
    assert "Upload-Expires" not in empty.headers
    url = await create(client, 3)
    last = await patch(client, url, 0, b"abc")
    assert "Upload-Expires" not in last.headers
    assert "Upload-Expires" not in (await head(client, url)).headers


async def test_no_upload_expires_when_expiration_is_off(tus_factory: TusFactory) -> None:
    server = await tus_factory(expiration=0)
    created = await server.client.post("/files/", headers={**TUS, "Upload-Length": "10"})
    url = created.headers["Location"]
    patched = await patch(server.client, url, 0, b"abc")
    for response in (created, patched, await head(server.client, url)):
        assert "Upload-Expires" not in response.headers


async def test_an_expired_upload_is_gone(tus_factory: TusFactory) -> None:
    server = await tus_factory(expiration=SHORT)
    client = server.client
    url = await create(client, 10)
    await patch(client, url, 0, b"abc")
    await asyncio.sleep(SHORT + 0.3)

    state = await head(client, url)
    assert state.status_code in (404, 410)
    assert "Upload-Offset" not in state.headers
    response = await patch(client, url, 3, b"def")
    assert response.status_code in (404, 410)
    assert_plain_error(response, response.status_code)
    assert (await client.get(url)).status_code in (404, 410)


async def test_sweep_removes_expired_uploads_and_keeps_finished_ones(
    tus_factory: TusFactory,
) -> None:
    server: TusServer = await tus_factory(expiration=SHORT)
    client = server.client
    finished = await upload(client, b"done")
    expiring = await create(client, 10)
    await patch(client, expiring, 0, b"abc")
    deferred = await create(client, None)
    await asyncio.sleep(SHORT + 0.3)

    assert await sweep_once(server.ctx) == 2
    for url in (expiring, deferred):
        assert (await head(client, url)).status_code in (404, 410)
    stored = " ".join(server.stored_names())
    for url in (expiring, deferred):
        assert url.rsplit("/", 1)[1] not in stored
    assert finished.rsplit("/", 1)[1] in stored
    assert (await client.get(finished)).content == b"done"
    assert await sweep_once(server.ctx) == 0


async def test_sweep_keeps_uploads_that_have_not_expired(server: TusServer) -> None:
    client = server.client
    url = await create(client, 10)
    await patch(client, url, 0, b"abc")
    before = server.stored_names()
    assert await sweep_once(server.ctx) == 0
    assert server.stored_names() == before
    assert (await head(client, url)).headers["Upload-Offset"] == "3"


@pytest.mark.parametrize("backend", ["file-redis", "s3-redis"])
async def test_redis_drops_an_abandoned_upload_soon_and_the_sweep_still_removes_it(
    tus_factory: TusFactory,
) -> None:
    """Its state lives `--redis-expired-ttl` past the expiry, not days; the sweep finds the
    upload through storage and removes it all the same."""
    server = await tus_factory(expiration=SHORT, redis_expired_ttl=SHORT)
    client = server.client
    url = await create(client, 10)
    await patch(client, url, 0, b"abc")
    upload_id = url.rsplit("/", 1)[1]
    key = upload_key(server.config.redis_prefix, upload_id, "state")
    with Redis.from_url(server.config.redis_url or "") as redis:
        assert 0 < redis.pttl(key) <= (SHORT + SHORT) * 1000 + 100
        await asyncio.sleep(SHORT + SHORT + 0.3)
        assert redis.exists(key) == 0
        assert await sweep_once(server.ctx) == 1
        assert redis.exists(key) == 0
    assert upload_id not in " ".join(server.stored_names())
    assert (await head(client, url)).status_code in (404, 410)
