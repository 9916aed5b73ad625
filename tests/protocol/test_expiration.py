"""The expiration extension: Upload-Expires, expired uploads, and the sweep that removes them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from redis import Redis

from tests.protocol.conftest import TusFactory, TusServer
from tests.protocol.helpers import OCTET, TUS, assert_plain_error, create, head, patch, upload
from tusd_py.expiry import sweep_once
from tusd_py.info import UploadInfo
from tusd_py.redis_client import upload_key
from tusd_py.stores.base import UnfinishedLister

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
    # Finished by the creation request: a creation and a PATCH apart can straddle SHORT.
    finished = await create(client, 4, body=b"done")
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


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


def another_instance(server: TusServer) -> dict[str, Any]:
    """Options for a second app over `server`'s uploads and state: a restart, or one more
    instance of a fleet (its caches are cold). The memory store cannot be shared."""
    shared = ("upload_dir", "s3_bucket", "azure_container", "redis_url", "redis_prefix")
    return {name: getattr(server.config, name) for name in shared}


async def test_the_sweep_reads_no_finished_upload(
    tus_factory: TusFactory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await tus_factory(expiration=SHORT)
    client = server.client
    # Finished by the creation request: a creation and a PATCH apart can straddle SHORT.
    bodies = [b"done %d" % i for i in range(12)]
    finished = [await create(client, len(body), body=body) for body in bodies]
    finished += [await create(client, 0) for _ in range(4)]  # zero-length: finished at once
    expiring = [await create(client, 10), await create(client, None), await create(client, 10)]
    await patch(client, expiring[0], 0, b"abc")
    await asyncio.sleep(SHORT + 0.3)
    server.config.expiration = 3600  # from now on: an upload that expires later
    fresh = await create(client, 10)
    sweeper = server
    if not backend.startswith("memory"):
        sweeper = await tus_factory(expiration=3600, **another_instance(server))

    store = sweeper.ctx.store
    read: list[str] = []
    load_info = store.load_info

    async def counted(upload_id: str) -> UploadInfo | None:
        read.append(upload_id)
        return await load_info(upload_id)

    monkeypatch.setattr(store, "load_info", counted)
    s3_calls: Counter[str] | None = getattr(store, "request_counts", None)
    s3_before = Counter(s3_calls or {})
    assert await sweep_once(sweeper.ctx) == 3

    unfinished = {upload_id(url) for url in [*expiring, fresh]}
    assert isinstance(store, UnfinishedLister)
    assert set(read) <= unfinished, "the sweep read a finished upload"
    assert len(read) <= 2 * len(unfinished)  # at most twice each: listed, then locked
    if s3_calls is not None:
        calls = s3_calls - s3_before
        assert calls["list_multipart_uploads"] == 1
        assert calls["list_objects_v2"] <= len(expiring), calls  # each removal's segments
        assert calls["get_object"] <= 2 * len(unfinished), calls

    for url in expiring:
        assert (await head(sweeper.client, url)).status_code in (404, 410)
    assert (await head(sweeper.client, fresh)).headers["Upload-Offset"] == "0"
    for url in finished[:3] + finished[-1:]:
        assert (await sweeper.client.get(url)).status_code == 200
    stored = " ".join(sweeper.stored_names())
    assert not any(upload_id(url) in stored for url in expiring)
    assert all(upload_id(url) in stored for url in finished)

    read.clear()
    assert await sweep_once(sweeper.ctx) == 0
    assert set(read) <= {upload_id(fresh)}


async def test_retention_deletes_finished_uploads_once_it_is_past(
    tus_factory: TusFactory, backend: str
) -> None:
    options: dict[str, Any] = {"expiration": 0, "retain_finished": 1.0}
    try:
        server = await tus_factory(**options)
    except ValueError as exc:  # S3 and Azure: a lifecycle rule does it (docs/storage.md)
        assert backend.startswith(("s3", "azure")), exc
        assert "lifecycle rule" in str(exc)
        return
    client = server.client
    old = [await upload(client, b"old"), await upload(client, b"")]
    unfinished = await create(client, 10)
    await patch(client, unfinished, 0, b"abc")
    assert await sweep_once(server.ctx) == 0  # not yet
    await asyncio.sleep(1.2)
    young = await upload(client, b"young")
    sweeper = server
    if not backend.startswith("memory"):
        sweeper = await tus_factory(**options, **another_instance(server))

    assert await sweep_once(sweeper.ctx) == 2
    for url in old:
        assert (await head(sweeper.client, url)).status_code == 404
    stored = " ".join(sweeper.stored_names())
    assert not any(upload_id(url) in stored for url in old)
    assert (await sweeper.client.get(young)).content == b"young"
    assert (await head(sweeper.client, unfinished)).headers["Upload-Offset"] == "3"
    assert await sweep_once(sweeper.ctx) == 0


async def test_retention_keeps_a_partial_that_an_unfinished_final_needs(
    tus_factory: TusFactory, backend: str
) -> None:
    try:
        server = await tus_factory(expiration=0, retain_finished=0.5)
    except ValueError:
        assert backend.startswith(("s3", "azure"))
        return
    client = server.client
    partial = {"Upload-Concat": "partial"}
    done = await create(client, 3, headers=partial)
    await patch(client, done, 0, b"abc")
    pending = await create(client, 3, headers=partial)
    final = await client.post(
        "/files/", headers={**TUS, "Upload-Concat": f"final;{done} {pending}"}
    )
    assert final.status_code == 201, final.text
    await asyncio.sleep(0.8)
    assert await sweep_once(server.ctx) == 0
    assert (await head(client, done)).status_code == 200


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
