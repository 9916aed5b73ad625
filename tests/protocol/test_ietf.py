"""The IETF resumable-upload draft, interop versions 3 to 8, on the tus endpoint (raw HTTP)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.protocol.conftest import TusServer
from tests.protocol.helpers import TUS, assert_plain_error, b64, chunked

VERSIONS = [3, 4, 5, 6, 7, 8]


class Draft:
    """Builds requests the way a client of one interop version does."""

    def __init__(self, version: int) -> None:
        self.version = version

    def base(self, **extra: str) -> dict[str, str]:
        return {"Upload-Draft-Interop-Version": str(self.version), **extra}

    def complete(self, done: bool) -> dict[str, str]:
        if self.version == 3:
            return {"Upload-Incomplete": "?0" if done else "?1"}
        return {"Upload-Complete": "?1" if done else "?0"}

    def is_complete(self, response: httpx.Response) -> bool:
        if self.version == 3:
            return response.headers["Upload-Incomplete"] == "?0"
        return response.headers["Upload-Complete"] == "?1"

    def append_headers(self, offset: int, done: bool, **extra: str) -> dict[str, str]:
        headers = self.base(**{"Upload-Offset": str(offset), **extra}, **self.complete(done))
        if self.version >= 6:
            headers["Content-Type"] = "application/partial-upload"
        return headers

    @property
    def append_status(self) -> int:
        return 201 if self.version <= 6 else 204


@pytest.fixture(params=VERSIONS, ids=[f"interop-{v}" for v in VERSIONS])
def draft(request: pytest.FixtureRequest) -> Draft:
    return Draft(request.param)


async def sha256_of(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(url, headers=TUS)
    assert response.status_code == 200, response.text
    return hashlib.sha256(response.content).hexdigest()


async def create(
    client: httpx.AsyncClient,
    draft: Draft,
    done: bool,
    body: bytes | AsyncIterator[bytes] = b"",
    **extra: str,
) -> httpx.Response:
    return await client.post(
        "/files/", headers=draft.base(**extra, **draft.complete(done)), content=body
    )


async def offset_of(client: httpx.AsyncClient, draft: Draft, url: str) -> httpx.Response:
    response = await client.head(url, headers=draft.base())
    assert response.status_code == 204, response.status_code
    assert response.headers["Cache-Control"] == "no-store"
    assert "Tus-Resumable" not in response.headers
    return response


async def test_create_empty_then_append_in_parts(client: httpx.AsyncClient, draft: Draft) -> None:
    data = random.Random(draft.version).randbytes(300_000)
    created = await create(client, draft, False)
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    assert created.headers["Upload-Offset"] == "0"
    assert not draft.is_complete(created)

    state = await offset_of(client, draft, url)
    assert state.headers["Upload-Offset"] == "0"
    assert not draft.is_complete(state)
    assert "Upload-Length" not in state.headers
    if draft.version >= 6:
        assert state.headers["Upload-Limit"].startswith("min-size=0")

    first = await client.patch(url, headers=draft.append_headers(0, False), content=data[:100_000])
    assert first.status_code == draft.append_status, first.text
    assert first.headers["Upload-Offset"] == "100000"
    assert not draft.is_complete(first)
    state = await offset_of(client, draft, url)
    assert state.headers["Upload-Offset"] == "100000"
    assert not draft.is_complete(state)

    last = await client.patch(
        url, headers=draft.append_headers(100_000, True), content=data[100_000:]
    )
    assert last.status_code == draft.append_status, last.text
    assert last.headers["Upload-Offset"] == str(len(data))
    assert draft.is_complete(last)
    state = await offset_of(client, draft, url)
    assert draft.is_complete(state)
    assert state.headers["Upload-Length"] == str(len(data))
    assert await sha256_of(client, url) == hashlib.sha256(data).hexdigest()


async def test_create_with_the_whole_body(client: httpx.AsyncClient, draft: Draft) -> None:
    data = random.Random(10 + draft.version).randbytes(50_000)
    created = await create(client, draft, True, data)
    assert created.status_code == 201, created.text
    assert created.headers["Upload-Offset"] == str(len(data))
    assert draft.is_complete(created)
    url = created.headers["Location"]
    assert await sha256_of(client, url) == hashlib.sha256(data).hexdigest()


async def test_create_with_part_of_the_body_and_a_declared_length(
    client: httpx.AsyncClient, draft: Draft
) -> None:
    data = random.Random(20 + draft.version).randbytes(9000)
    created = await create(client, draft, False, data[:4000], **{"Upload-Length": "9000"})
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    assert created.headers["Upload-Offset"] == "4000"
    state = await offset_of(client, draft, url)
    assert state.headers["Upload-Length"] == "9000"
    assert not draft.is_complete(state)
    done = await client.patch(url, headers=draft.append_headers(4000, True), content=data[4000:])
    assert done.status_code == draft.append_status, done.text
    assert draft.is_complete(done)
    assert await sha256_of(client, url) == hashlib.sha256(data).hexdigest()


async def test_empty_complete_creation(client: httpx.AsyncClient, draft: Draft) -> None:
    created = await create(client, draft, True)
    assert created.status_code == 201, created.text
    assert draft.is_complete(created)
    assert (await client.get(created.headers["Location"], headers=TUS)).content == b""


async def test_offset_mismatch_is_409_with_the_right_offset(
    client: httpx.AsyncClient, draft: Draft
) -> None:
    url = (await create(client, draft, False, b"0123456789")).headers["Location"]
    response = await client.patch(url, headers=draft.append_headers(4, False), content=b"xx")
    assert_plain_error(response, 409)
    assert response.headers["Upload-Offset"] == "10"
    assert (await offset_of(client, draft, url)).headers["Upload-Offset"] == "10"


async def test_completing_chunked_append_fixes_the_length(
    client: httpx.AsyncClient, draft: Draft
) -> None:
    url = (await create(client, draft, False)).headers["Location"]
    response = await client.patch(
        url, headers=draft.append_headers(0, True), content=chunked(b"abc", b"defg")
    )
    assert response.status_code == draft.append_status, response.text
    assert draft.is_complete(response)
    state = await offset_of(client, draft, url)
    assert state.headers["Upload-Length"] == "7"
    assert draft.is_complete(state)


async def test_all_bytes_then_an_empty_completing_append(
    client: httpx.AsyncClient, draft: Draft
) -> None:
    url = (await create(client, draft, False, **{"Upload-Length": "3"})).headers["Location"]
    sent = await client.patch(url, headers=draft.append_headers(0, False), content=b"abc")
    assert sent.status_code == draft.append_status
    done = await client.patch(url, headers=draft.append_headers(3, True), content=b"")
    assert done.status_code == draft.append_status, done.text
    assert draft.is_complete(done)


async def test_append_to_a_complete_upload_is_400(client: httpx.AsyncClient, draft: Draft) -> None:
    url = (await create(client, draft, True, b"done")).headers["Location"]
    response = await client.patch(url, headers=draft.append_headers(4, True), content=b"more")
    assert_plain_error(response, 400)
    assert "already complete" in response.text


async def test_inconsistent_lengths_are_400(client: httpx.AsyncClient, draft: Draft) -> None:
    response = await create(client, draft, True, b"12345", **{"Upload-Length": "10"})
    assert_plain_error(response, 400)
    url = (await create(client, draft, False, **{"Upload-Length": "10"})).headers["Location"]
    response = await client.patch(url, headers=draft.append_headers(0, True), content=b"12345")
    assert_plain_error(response, 400)
    assert (await offset_of(client, draft, url)).headers["Upload-Offset"] == "0"


async def test_bytes_past_the_length_are_400(client: httpx.AsyncClient, draft: Draft) -> None:
    url = (await create(client, draft, False, **{"Upload-Length": "4"})).headers["Location"]
    response = await client.patch(url, headers=draft.append_headers(0, False), content=b"12345")
    assert_plain_error(response, 400)
    response = await client.patch(
        url, headers=draft.append_headers(0, False), content=chunked(b"123", b"45")
    )
    assert_plain_error(response, 400)


async def test_head_with_upload_offset_is_400(client: httpx.AsyncClient, draft: Draft) -> None:
    url = (await create(client, draft, False)).headers["Location"]
    response = await client.head(url, headers=draft.base(**{"Upload-Offset": "0"}))
    assert response.status_code == 400


async def test_cancellation(client: httpx.AsyncClient, draft: Draft) -> None:
    url = (await create(client, draft, False, b"abc")).headers["Location"]
    response = await client.delete(url, headers=draft.base())
    assert response.status_code == 204
    assert (await client.head(url, headers=draft.base())).status_code == 404
    assert (await client.delete(url, headers=draft.base())).status_code == 404


async def test_unknown_upload_is_404(client: httpx.AsyncClient, draft: Draft) -> None:
    url = "/files/0123456789abcdef0123456789abcdef"
    assert (await client.head(url, headers=draft.base())).status_code == 404
    response = await client.patch(url, headers=draft.append_headers(0, True), content=b"x")
    assert_plain_error(response, 404)


async def test_options_announces_limits(client: httpx.AsyncClient, draft: Draft) -> None:
    response = await client.options("/files/", headers=draft.base())
    assert response.status_code == 204
    if draft.version >= 6:
        assert response.headers["Upload-Limit"] == "min-size=0"


@pytest.mark.parametrize("version", [6, 7, 8])
async def test_append_must_be_partial_upload(client: httpx.AsyncClient, version: int) -> None:
    draft = Draft(version)
    url = (await create(client, draft, False)).headers["Location"]
    headers = {**draft.append_headers(0, True), "Content-Type": "application/octet-stream"}
    assert_plain_error(await client.patch(url, headers=headers, content=b"x"), 415)


@pytest.mark.parametrize("version", [7, 8])
async def test_append_must_say_whether_it_completes(
    client: httpx.AsyncClient, version: int
) -> None:
    draft = Draft(version)
    url = (await create(client, draft, False)).headers["Location"]
    headers = draft.append_headers(0, True)
    del headers["Upload-Complete"]
    assert_plain_error(await client.patch(url, headers=headers, content=b"x"), 400)


@pytest.mark.parametrize("version", [4, 5, 6, 7, 8])
async def test_creation_needs_upload_complete(client: httpx.AsyncClient, version: int) -> None:
    response = await client.post("/files/", headers=Draft(version).base(), content=b"x")
    assert_plain_error(response, 400)


@pytest.mark.parametrize("value", ["2", "9", "x", ""])
async def test_unsupported_interop_version_is_400(client: httpx.AsyncClient, value: str) -> None:
    response = await client.post(
        "/files/", headers={"Upload-Draft-Interop-Version": value, "Upload-Complete": "?1"}
    )
    assert_plain_error(response, 400)
    assert "3 to 8" in response.text


async def test_malformed_upload_complete_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/files/", headers={"Upload-Draft-Interop-Version": "6", "Upload-Complete": "true"}
    )
    assert_plain_error(response, 400)


async def test_tus_requests_are_unaffected(client: httpx.AsyncClient) -> None:
    draft = Draft(6)
    created = await create(
        client,
        draft,
        False,
        b"hello",
        **{
            "Upload-Length": "11",
            "Content-Type": "text/plain",
            "Content-Disposition": 'attachment; filename="greeting.txt"',
        },
    )
    url = created.headers["Location"]
    # Without the interop header this is a tus request: Tus-Resumable is required again.
    assert (await client.head(url)).status_code == 412
    state = await client.head(url, headers=TUS)
    assert state.status_code == 200
    assert state.headers["Upload-Offset"] == "5"
    assert state.headers["Upload-Length"] == "11"
    assert state.headers["Upload-Metadata"] == (
        f"filetype {b64('text/plain')},filename {b64('greeting.txt')}"
    )
    # ...and a tus client can finish what an IETF client started.
    done = await client.patch(
        url,
        headers={**TUS, "Upload-Offset": "5", "Content-Type": "application/offset+octet-stream"},
        content=b" world",
    )
    assert done.status_code == 204
    ietf_state = await offset_of(client, draft, url)
    assert ietf_state.headers["Upload-Complete"] == "?1"
    assert (await client.get(url, headers=TUS)).content == b"hello world"


async def test_failed_creation_leaves_nothing_behind(server: TusServer) -> None:
    draft = Draft(6)
    before = server.stored_names()
    response = await create(
        server.client, draft, False, chunked(b"12345", b"678"), **{"Upload-Length": "5"}
    )
    assert_plain_error(response, 400)
    assert server.stored_names() == before
