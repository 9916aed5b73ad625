"""The IETF resumable-upload draft, interop versions 3 to 9, on the tus endpoint (raw HTTP)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.protocol.conftest import TusFactory, TusServer
from tests.protocol.helpers import TUS, assert_plain_error, b64, chunked

VERSIONS = [3, 4, 5, 6, 7, 8, 9]


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
    url = (await create(client, draft, False, b"", **{"Upload-Length": "3"})).headers["Location"]
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
    url = (await create(client, draft, False, b"", **{"Upload-Length": "10"})).headers["Location"]
    response = await client.patch(url, headers=draft.append_headers(0, True), content=b"12345")
    assert_plain_error(response, 400)
    assert (await offset_of(client, draft, url)).headers["Upload-Offset"] == "0"


async def test_bytes_past_the_length_are_400(client: httpx.AsyncClient, draft: Draft) -> None:
    url = (await create(client, draft, False, b"", **{"Upload-Length": "4"})).headers["Location"]
    response = await client.patch(url, headers=draft.append_headers(0, False), content=b"12345")
    assert_plain_error(response, 400)
    response = await client.patch(
        url, headers=draft.append_headers(0, False), content=chunked(b"123", b"45")
    )
    assert_plain_error(response, 400)


async def test_state_fields_on_offset_retrieval_and_cancellation(
    client: httpx.AsyncClient, draft: Draft
) -> None:
    """Drafts up to -05 (interop 6) make them a 400; later drafts dropped the rule."""
    url = (await create(client, draft, False)).headers["Location"]
    fields = draft.base(**{"Upload-Offset": "0"}, **draft.complete(False))
    head = await client.head(url, headers=fields)
    delete = await client.delete(url, headers=fields)
    if draft.version <= 6:
        assert (head.status_code, delete.status_code) == (400, 400)
    else:
        assert (head.status_code, delete.status_code) == (204, 204)
        assert head.headers["Upload-Offset"] == "0"


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
    assert response.headers["Allow"] == "OPTIONS, POST, PUT, PATCH"
    if draft.version >= 6:
        assert response.headers["Upload-Limit"] == "min-size=0"
    # Drafts -10 and -11 (interop 8) require Accept-Patch; -12 (interop 9) removed it again.
    assert response.headers.get("Accept-Patch") == (
        "application/partial-upload" if draft.version == 8 else None
    )


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_creation_by_put_and_patch(
    client: httpx.AsyncClient, draft: Draft, method: str
) -> None:
    """Any request with content to the endpoint can start an upload, not only POST."""
    headers = draft.base(**draft.complete(True))
    created = await client.request(method, "/files/", headers=headers, content=b"put it here")
    assert created.status_code == 201, created.text
    assert draft.is_complete(created)
    assert (await client.get(created.headers["Location"], headers=TUS)).content == b"put it here"


async def test_get_is_offset_retrieval_from_interop_9(client: httpx.AsyncClient) -> None:
    """Draft -12 defines GET on the upload resource as an offset retrieval (HEAD recommended);
    before 9 an IETF GET is a download."""
    draft = Draft(9)
    url = (await create(client, draft, False, b"abc", **{"Upload-Length": "5"})).headers["Location"]
    state = await client.get(url, headers=draft.base())
    assert state.status_code == 204, state.text
    assert state.content == b""
    assert state.headers["Upload-Offset"] == "3"
    assert state.headers["Upload-Complete"] == "?0"
    assert state.headers["Upload-Length"] == "5"
    assert state.headers["Upload-Limit"].startswith("min-size=0")
    assert state.headers["Cache-Control"] == "no-store"
    done = await client.patch(url, headers=draft.append_headers(3, True), content=b"de")
    assert done.status_code == 204, done.text
    state = await client.get(url, headers=draft.base())
    assert (state.status_code, state.content) == (204, b"")
    assert state.headers["Upload-Complete"] == "?1"
    assert (await client.get(url, headers=Draft(8).base())).content == b"abcde"
    assert (await client.get(url, headers=TUS)).content == b"abcde"


async def test_errors_of_creation_and_append_say_incomplete_from_interop_9(
    client: httpx.AsyncClient, draft: Draft
) -> None:
    """From 9 `Upload-Complete: ?0` marks a response as the resumable-upload protocol's own,
    errors included; before 9 only the 409 carries the field."""
    [(name, incomplete)] = draft.complete(False).items()
    labelled = incomplete if draft.version >= 9 else None
    inconsistent = await create(client, draft, True, b"12345", **{"Upload-Length": "10"})
    assert_plain_error(inconsistent, 400)
    assert inconsistent.headers.get(name) == labelled
    url = (await create(client, draft, True, b"done")).headers["Location"]
    on_complete = await client.patch(url, headers=draft.append_headers(4, True), content=b"more")
    assert_plain_error(on_complete, 400)
    assert on_complete.headers.get(name) == labelled
    unknown = await client.patch(
        "/files/0123456789abcdef0123456789abcdef",
        headers=draft.append_headers(0, True),
        content=b"x",
    )
    assert_plain_error(unknown, 404)
    assert unknown.headers.get(name) == labelled
    retrieval = await client.head("/files/0123456789abcdef0123456789abcdef", headers=draft.base())
    assert retrieval.status_code == 404
    assert name not in retrieval.headers


async def test_too_large_answers_the_limits(tus_factory: TusFactory, draft: Draft) -> None:
    client = (await tus_factory(max_size=100)).client
    response = await create(client, draft, False, b"", **{"Upload-Length": "101"})
    assert_plain_error(response, 413)
    expected = "min-size=0,max-size=100" if draft.version >= 6 else None
    assert response.headers.get("Upload-Limit") == expected


async def test_browsers_can_read_the_draft_fields(tus_factory: TusFactory) -> None:
    """CORS exposes what an IETF client reads: Location, Upload-Offset, Upload-Complete,
    Upload-Length and Upload-Limit (issue 15)."""
    origin = "https://app.example"
    client = (await tus_factory(cors_origins=[origin])).client
    draft = Draft(9)
    created = await create(client, draft, False, b"", **{"Upload-Length": "3", "Origin": origin})
    assert created.status_code == 201, created.text
    assert created.headers["Upload-Limit"].startswith("min-size=0,max-age=")
    exposed = {
        item.strip().lower() for item in created.headers["Access-Control-Expose-Headers"].split(",")
    }
    wanted = {"location", "upload-offset", "upload-complete", "upload-length", "upload-limit"}
    assert wanted <= exposed
    preflight = await client.options(
        created.headers["Location"],
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "upload-draft-interop-version, upload-complete, "
            "upload-offset, content-type",
        },
    )
    assert preflight.status_code == 200, preflight.text


@pytest.mark.parametrize("version", [6, 7, 8, 9])
async def test_append_must_be_partial_upload(client: httpx.AsyncClient, version: int) -> None:
    draft = Draft(version)
    url = (await create(client, draft, False)).headers["Location"]
    headers = {**draft.append_headers(0, True), "Content-Type": "application/octet-stream"}
    assert_plain_error(await client.patch(url, headers=headers, content=b"x"), 415)


@pytest.mark.parametrize("version", [7, 8, 9])
async def test_append_must_say_whether_it_completes(
    client: httpx.AsyncClient, version: int
) -> None:
    draft = Draft(version)
    url = (await create(client, draft, False)).headers["Location"]
    headers = draft.append_headers(0, True)
    del headers["Upload-Complete"]
    assert_plain_error(await client.patch(url, headers=headers, content=b"x"), 400)


@pytest.mark.parametrize("version", [4, 5, 6, 7, 8, 9])
async def test_creation_needs_upload_complete(client: httpx.AsyncClient, version: int) -> None:
    response = await client.post("/files/", headers=Draft(version).base(), content=b"x")
    assert_plain_error(response, 400)


@pytest.mark.parametrize("value", ["2", "10", "x", ""])
async def test_unsupported_interop_version_is_400(client: httpx.AsyncClient, value: str) -> None:
    response = await client.post(
        "/files/", headers={"Upload-Draft-Interop-Version": value, "Upload-Complete": "?1"}
    )
    assert_plain_error(response, 400)
    assert "3 to 9" in response.text


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
