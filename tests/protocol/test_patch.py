"""PATCH: appending at the offset, and every way a PATCH can be wrong."""

from __future__ import annotations

import httpx
import pytest

from tests.protocol.conftest import TusFactory
from tests.protocol.helpers import (
    OCTET,
    TUS,
    assert_plain_error,
    chunked,
    create,
    head,
    patch,
    patch_headers,
)


async def offset_of(client: httpx.AsyncClient, url: str) -> str:
    return (await head(client, url)).headers["Upload-Offset"]


async def test_patch_appends_and_answers_the_new_offset(client: httpx.AsyncClient) -> None:
    url = await create(client, 11)
    first = await patch(client, url, 0, b"hello ")
    assert first.status_code == 204
    assert first.headers["Upload-Offset"] == "6"
    assert first.headers["Tus-Resumable"] == "1.0.0"
    second = await patch(client, url, 6, b"world")
    assert second.status_code == 204
    assert second.headers["Upload-Offset"] == "11"
    assert await offset_of(client, url) == "11"
    assert (await client.get(url)).content == b"hello world"


async def test_patch_with_a_chunked_body(client: httpx.AsyncClient) -> None:
    url = await create(client, 6)
    response = await client.patch(
        url, headers=patch_headers(0), content=chunked(b"ab", b"", b"cd", b"ef")
    )
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "6"
    assert (await client.get(url)).content == b"abcdef"


async def test_empty_patch_keeps_the_offset(client: httpx.AsyncClient) -> None:
    url = await create(client, 4)
    response = await patch(client, url, 0, b"")
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "0"


async def test_a_larger_upload_in_many_patches(client: httpx.AsyncClient) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    url = await create(client, len(data))
    offset = 0
    for size in (1, 1000, 300_000, 65_536, len(data)):
        part = data[offset : offset + size]
        response = await patch(client, url, offset, part)
        assert response.status_code == 204
        offset += len(part)
        assert response.headers["Upload-Offset"] == str(offset)
        if offset == len(data):
            break
    assert (await client.get(url)).content == data


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/octet-stream", "text/plain", "application/offset+octet-streamx"],
)
async def test_wrong_content_type_is_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    url = await create(client, 3)
    headers = {**TUS, "Upload-Offset": "0"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await client.patch(url, headers=headers, content=b"abc")
    assert_plain_error(response, 415)
    assert await offset_of(client, url) == "0"


async def test_content_type_parameters_and_case_are_accepted(client: httpx.AsyncClient) -> None:
    url = await create(client, 3)
    response = await client.patch(
        url,
        headers={
            **TUS,
            "Upload-Offset": "0",
            "Content-Type": "Application/Offset+Octet-Stream; x=1",
        },
        content=b"abc",
    )
    assert response.status_code == 204


async def test_missing_upload_offset_is_400(client: httpx.AsyncClient) -> None:
    url = await create(client, 3)
    response = await client.patch(url, headers={**TUS, "Content-Type": OCTET}, content=b"abc")
    assert_plain_error(response, 400)
    assert await offset_of(client, url) == "0"


@pytest.mark.parametrize("value", ["-1", "1.0", " 0", "0 ", "0x0", "", "zero", "9" * 30, "0,0"])
async def test_malformed_upload_offset_is_400(client: httpx.AsyncClient, value: str) -> None:
    url = await create(client, 3)
    response = await client.patch(
        url,
        headers=[("Tus-Resumable", "1.0.0"), ("Content-Type", OCTET), ("Upload-Offset", value)],
        content=b"abc",
    )
    assert_plain_error(response, 400)
    assert await offset_of(client, url) == "0"


@pytest.mark.parametrize("sent", [0, 2, 4, 100])
async def test_offset_mismatch_is_409_and_changes_nothing(
    client: httpx.AsyncClient, sent: int
) -> None:
    url = await create(client, 10)
    assert (await patch(client, url, 0, b"abc")).status_code == 204
    response = await patch(client, url, sent, b"xyz")
    assert_plain_error(response, 409)
    assert await offset_of(client, url) == "3"
    assert (await patch(client, url, 3, b"defghij")).status_code == 204
    assert (await client.get(url)).content == b"abcdefghij"


async def test_bytes_beyond_the_length_are_413_and_change_nothing(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client, 5)
    assert (await patch(client, url, 0, b"ab")).status_code == 204
    response = await patch(client, url, 2, b"cdefgh")
    assert_plain_error(response, 413)
    assert await offset_of(client, url) == "2"
    assert (await patch(client, url, 2, b"cde")).status_code == 204
    assert (await client.get(url)).content == b"abcde"


async def test_chunked_bytes_beyond_the_length_are_413_and_change_nothing(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client, 5)
    response = await client.patch(
        url, headers=patch_headers(0), content=chunked(b"abc", b"def", b"ghi")
    )
    assert_plain_error(response, 413)
    assert await offset_of(client, url) == "0"
    assert (await patch(client, url, 0, b"abcde")).status_code == 204
    assert (await client.get(url)).content == b"abcde"


async def test_patch_on_a_finished_upload_with_more_bytes_is_413(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client, 2)
    assert (await patch(client, url, 0, b"ab")).status_code == 204
    response = await patch(client, url, 2, b"c")
    assert_plain_error(response, 413)
    assert (await client.get(url)).content == b"ab"


async def test_patch_on_an_unknown_upload_is_404(client: httpx.AsyncClient) -> None:
    response = await patch(client, "/files/0123456789abcdef0123456789abcdef", 0, b"abc")
    assert_plain_error(response, 404)
    assert "Upload-Offset" not in response.headers


async def test_patch_to_the_collection_is_not_allowed(client: httpx.AsyncClient) -> None:
    response = await patch(client, "/files/", 0, b"abc")
    assert_plain_error(response, 405)


# --- creation-defer-length ---------------------------------------------------------------------


async def test_deferred_length_declared_by_a_later_patch(client: httpx.AsyncClient) -> None:
    url = await create(client, None)
    first = await patch(client, url, 0, b"abc")
    assert first.status_code == 204
    assert first.headers["Upload-Offset"] == "3"
    state = await head(client, url)
    assert state.headers["Upload-Defer-Length"] == "1"
    assert (await client.get(url)).status_code == 409  # not finished: length unknown

    last = await patch(client, url, 3, b"def", **{"Upload-Length": "6"})
    assert last.status_code == 204
    assert last.headers["Upload-Offset"] == "6"
    state = await head(client, url)
    assert state.headers["Upload-Length"] == "6"
    assert "Upload-Defer-Length" not in state.headers
    assert (await client.get(url)).content == b"abcdef"


async def test_deferred_length_declared_with_an_empty_final_patch(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client, None)
    assert (await patch(client, url, 0, b"abcd")).status_code == 204
    response = await patch(client, url, 4, b"", **{"Upload-Length": "4"})
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "4"
    assert (await client.get(url)).content == b"abcd"


async def test_deferred_length_declared_before_any_bytes(client: httpx.AsyncClient) -> None:
    url = await create(client, None)
    response = await patch(client, url, 0, b"", **{"Upload-Length": "3"})
    assert response.status_code == 204
    assert (await head(client, url)).headers["Upload-Length"] == "3"
    assert (await patch(client, url, 0, b"abcd")).status_code == 413
    assert (await patch(client, url, 0, b"abc")).status_code == 204


async def test_declared_length_cannot_change(client: httpx.AsyncClient) -> None:
    url = await create(client, None)
    assert (await patch(client, url, 0, b"ab", **{"Upload-Length": "10"})).status_code == 204
    response = await patch(client, url, 2, b"cd", **{"Upload-Length": "12"})
    assert_plain_error(response, 400)
    state = await head(client, url)
    assert state.headers["Upload-Length"] == "10"
    assert state.headers["Upload-Offset"] == "2"
    # Repeating the same length is harmless.
    assert (await patch(client, url, 2, b"cd", **{"Upload-Length": "10"})).status_code == 204


async def test_length_fixed_at_creation_cannot_change(client: httpx.AsyncClient) -> None:
    url = await create(client, 5)
    response = await patch(client, url, 0, b"ab", **{"Upload-Length": "6"})
    assert_plain_error(response, 400)
    assert await offset_of(client, url) == "0"


async def test_declared_length_below_the_offset_is_400(client: httpx.AsyncClient) -> None:
    url = await create(client, None)
    assert (await patch(client, url, 0, b"abcd")).status_code == 204
    response = await patch(client, url, 4, b"", **{"Upload-Length": "3"})
    assert_plain_error(response, 400)
    assert (await head(client, url)).headers["Upload-Defer-Length"] == "1"


async def test_declared_length_shorter_than_the_body_is_rejected_and_not_kept(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client, None)
    response = await patch(client, url, 0, b"abcdef", **{"Upload-Length": "4"})
    assert response.status_code in (400, 413)
    assert_plain_error(response, response.status_code)
    state = await head(client, url)
    assert state.headers["Upload-Offset"] == "0"
    assert state.headers["Upload-Defer-Length"] == "1"  # a rejected PATCH declares nothing
    # So the client can still send the right length.
    assert (await patch(client, url, 0, b"abcdef", **{"Upload-Length": "6"})).status_code == 204


@pytest.mark.parametrize("value", ["-1", "1.5", "", "x", "9" * 25])
async def test_malformed_declared_length_is_400(client: httpx.AsyncClient, value: str) -> None:
    url = await create(client, None)
    response = await patch(client, url, 0, b"ab", **{"Upload-Length": value})
    assert_plain_error(response, 400)
    state = await head(client, url)
    assert state.headers["Upload-Defer-Length"] == "1"
    assert state.headers["Upload-Offset"] == "0"


async def test_declared_length_over_max_size_is_413(tus_factory: TusFactory) -> None:
    server = await tus_factory(max_size=10)
    url = await create(server.client, None)
    response = await patch(server.client, url, 0, b"ab", **{"Upload-Length": "11"})
    assert_plain_error(response, 413)


async def test_deferred_upload_cannot_grow_past_max_size(tus_factory: TusFactory) -> None:
    server = await tus_factory(max_size=5)
    url = await create(server.client, None)
    assert (await patch(server.client, url, 0, b"abc")).status_code == 204
    response = await patch(server.client, url, 3, b"def")
    assert_plain_error(response, 413)
    assert await offset_of(server.client, url) == "3"
