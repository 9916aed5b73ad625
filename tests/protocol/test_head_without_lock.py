"""HEAD reads an upload without taking its lock (issue 14, finding 13).

Readers of one upload never queue behind each other; a PATCH still holding the lock (the
resuming client's previous request) is asked to let go and commits before the offset is read.
Run on the in-process locker and on Redis.
"""

from __future__ import annotations

import asyncio
import collections

import httpx
import pytest

from tests.integration.redis_helpers import CommandCounter
from tests.protocol.conftest import TusServer
from tests.protocol.helpers import create, head, patch
from tests.protocol.test_locking import StalledBody, start_stalled_patch

STORM = 500


@pytest.fixture(params=["memory-local", "file-redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def storm(client: httpx.AsyncClient, url: str, count: int) -> list[httpx.Response]:
    return await asyncio.wait_for(
        asyncio.gather(*(head(client, url) for _ in range(count))), timeout=60
    )


async def test_concurrent_heads_of_one_upload_all_answer(client: httpx.AsyncClient) -> None:
    url = await create(client, 10)
    assert (await patch(client, url, 0, b"abc")).status_code == 204
    responses = await storm(client, url, STORM)
    assert collections.Counter(r.status_code for r in responses) == {200: STORM}
    assert {r.headers["Upload-Offset"] for r in responses} == {"3"}


async def test_heads_during_a_stalled_patch_share_its_handover(client: httpx.AsyncClient) -> None:
    url = await create(client, 100)
    body = StalledBody(b"a" * 30)
    patching = await start_stalled_patch(client, url, 0, body)

    responses = await storm(client, url, STORM)
    assert collections.Counter(r.status_code for r in responses) == {200: STORM}
    # Every HEAD saw the stalled PATCH's bytes: it was asked to let go and committed first.
    assert {r.headers["Upload-Offset"] for r in responses} == {"30"}

    response = await asyncio.wait_for(patching, 5)
    assert (response.status_code, response.headers["Upload-Offset"]) == (204, "30")
    body.resume.set()
    assert (await patch(client, url, 30, b"b" * 70)).status_code == 204


@pytest.mark.parametrize("backend", ["file-redis"])
async def test_head_of_an_idle_upload_is_one_redis_round_trip(server: TusServer) -> None:
    client = server.client
    url = await create(client, 10)
    await head(client, url)  # loads the script once
    counter = CommandCounter(server.ctx.state._client)  # type: ignore[attr-defined]
    response = await head(client, url)
    assert response.status_code == 200
    assert counter.commands == ["EVALSHA"]
