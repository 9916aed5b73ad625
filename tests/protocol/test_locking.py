"""One request at a time per upload, and a stalled PATCH gives way instead of blocking.

A client whose connection hangs mid-PATCH comes back with HEAD (or DELETE, or a retried PATCH).
That request must not wait for the dead PATCH's timeout: the PATCH hands over, keeping the bytes
it received, and the newcomer sees them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import httpx

from tests.protocol.conftest import TusFactory
from tests.protocol.helpers import TUS, create, head, patch, patch_headers

QUICK = 2.0  # seconds a request may take to get past a stalled PATCH


class StalledBody:
    """A body that sends `first`, then goes silent until `resume` is set."""

    def __init__(self, first: bytes, rest: bytes = b"never sent") -> None:
        self.first = first
        self.rest = rest
        self.taken = asyncio.Event()  # the server read `first` and waits for more
        self.resume = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        self.taken.set()
        await self.resume.wait()
        yield self.rest


async def start_stalled_patch(
    client: httpx.AsyncClient, url: str, offset: int, body: StalledBody
) -> asyncio.Task[httpx.Response]:
    task = asyncio.create_task(client.patch(url, headers=patch_headers(offset), content=body))
    await asyncio.wait_for(body.taken.wait(), 5)
    return task


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    response = await asyncio.wait_for(request, 10)
    return response, loop.time() - start


async def test_head_interrupts_a_stalled_patch(client: httpx.AsyncClient) -> None:
    url = await create(client, 100)
    body = StalledBody(b"a" * 30)
    patching = await start_stalled_patch(client, url, 0, body)

    state, elapsed = await timed(head(client, url))
    assert elapsed < QUICK
    assert state.status_code == 200
    assert state.headers["Upload-Offset"] == "30"

    response = await asyncio.wait_for(patching, 5)
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "30"
    body.resume.set()

    # The client resumes where HEAD said.
    assert (await patch(client, url, 30, b"b" * 70)).status_code == 204
    assert (await client.get(url)).content == b"a" * 30 + b"b" * 70


async def test_head_interrupts_a_stalled_patch_of_a_deferred_upload(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client, None)
    assert (await patch(client, url, 0, b"12345")).status_code == 204
    body = StalledBody(b"678")
    patching = await start_stalled_patch(client, url, 5, body)
    state, elapsed = await timed(head(client, url))
    assert elapsed < QUICK
    assert state.headers["Upload-Offset"] == "8"
    assert state.headers["Upload-Defer-Length"] == "1"
    assert (await asyncio.wait_for(patching, 5)).headers["Upload-Offset"] == "8"
    body.resume.set()


async def test_a_retried_patch_interrupts_the_stalled_one_and_learns_the_offset(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client, 10)
    body = StalledBody(b"abcd")
    patching = await start_stalled_patch(client, url, 0, body)

    retry, elapsed = await timed(patch(client, url, 0, b"abcdefghij"))
    assert elapsed < QUICK
    assert retry.status_code == 409
    assert retry.headers["Upload-Offset"] == "4"
    assert (await asyncio.wait_for(patching, 5)).status_code == 204
    body.resume.set()

    assert (await patch(client, url, 4, b"efghij")).status_code == 204
    assert (await client.get(url)).content == b"abcdefghij"


async def test_delete_interrupts_a_stalled_patch(client: httpx.AsyncClient) -> None:
    url = await create(client, 10)
    body = StalledBody(b"abc")
    patching = await start_stalled_patch(client, url, 0, body)

    deleted, elapsed = await timed(client.delete(url, headers=TUS))
    assert elapsed < QUICK
    assert deleted.status_code == 204
    assert (await asyncio.wait_for(patching, 5)).status_code in (204, 404, 410)
    body.resume.set()
    assert (await head(client, url)).status_code in (404, 410)


async def test_a_silent_patch_is_cut_off_and_keeps_its_bytes(tus_factory: TusFactory) -> None:
    server = await tus_factory(read_timeout=0.3)
    url = await create(server.client, 10)
    body = StalledBody(b"abcdef")
    patching = await start_stalled_patch(server.client, url, 0, body)
    response, elapsed = await timed(patching)
    assert elapsed < QUICK
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "6"
    body.resume.set()
    assert (await head(server.client, url)).headers["Upload-Offset"] == "6"


async def test_requests_for_other_uploads_are_not_held_up(client: httpx.AsyncClient) -> None:
    stalled_url = await create(client, 10)
    other = await create(client, 3)
    body = StalledBody(b"ab")
    patching = await start_stalled_patch(client, stalled_url, 0, body)

    response, elapsed = await timed(patch(client, other, 0, b"xyz"))
    assert elapsed < QUICK
    assert response.status_code == 204
    assert not patching.done()  # the stalled PATCH was not asked to give way

    body.resume.set()
    finished = await asyncio.wait_for(patching, 5)
    assert finished.status_code == 413  # "never sent" is more than the 8 bytes left
    assert (await head(client, stalled_url)).headers["Upload-Offset"] == "0"


async def test_concurrent_heads_agree(client: httpx.AsyncClient) -> None:
    url = await create(client, 5)
    await patch(client, url, 0, b"abc")
    responses = await asyncio.gather(*(head(client, url) for _ in range(10)))
    assert {r.headers["Upload-Offset"] for r in responses} == {"3"}
