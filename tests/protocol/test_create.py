"""POST: creation, creation-with-upload and creation-defer-length."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.protocol.conftest import TusFactory, TusServer
from tests.protocol.helpers import (
    OCTET,
    TUS,
    assert_plain_error,
    b64,
    chunked,
    create,
    head,
)


async def test_creation_answers_201_with_location(client: httpx.AsyncClient) -> None:
    response = await client.post("/files/", headers={**TUS, "Upload-Length": "10"})
    assert response.status_code == 201
    assert response.headers["Tus-Resumable"] == "1.0.0"
    location = response.headers["Location"]
    assert location.startswith("http://testserver/files/")
    state = await head(client, location)
    assert state.status_code == 200
    assert state.headers["Upload-Offset"] == "0"
    assert state.headers["Upload-Length"] == "10"


async def test_each_creation_gets_its_own_location(client: httpx.AsyncClient) -> None:
    locations = {await create(client, 1) for _ in range(5)}
    assert len(locations) == 5


async def test_zero_length_upload_is_complete_at_once(client: httpx.AsyncClient) -> None:
    url = await create(client, 0)
    state = await head(client, url)
    assert state.headers["Upload-Offset"] == "0"
    assert state.headers["Upload-Length"] == "0"
    download = await client.get(url)
    assert download.status_code == 200
    assert download.content == b""
    assert download.headers["Content-Length"] == "0"


async def test_deferred_length(client: httpx.AsyncClient) -> None:
    response = await client.post("/files/", headers={**TUS, "Upload-Defer-Length": "1"})
    assert response.status_code == 201
    state = await head(client, response.headers["Location"])
    assert state.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in state.headers
    assert state.headers["Upload-Offset"] == "0"


async def test_length_and_defer_length_together_is_400(
    client: httpx.AsyncClient, server: TusServer
) -> None:
    response = await client.post(
        "/files/", headers={**TUS, "Upload-Length": "10", "Upload-Defer-Length": "1"}
    )
    assert_plain_error(response, 400)
    assert server.stored_names() == set()


async def test_neither_length_nor_defer_length_is_400(
    client: httpx.AsyncClient, server: TusServer
) -> None:
    response = await client.post("/files/", headers=TUS)
    assert_plain_error(response, 400)
    assert server.stored_names() == set()


@pytest.mark.parametrize("value", ["0", "2", "true", "", " 1", "1 ", "01"])
async def test_defer_length_other_than_1_is_400(client: httpx.AsyncClient, value: str) -> None:
    response = await client.post("/files/", headers={**TUS, "Upload-Defer-Length": value})
    assert_plain_error(response, 400)


@pytest.mark.parametrize(
    "value",
    ["-1", "1.5", " 1", "1 ", "0x10", "1e3", "+5", "", "ten", "١٢", "9" * 19, "9" * 40, "1,2"],
)
async def test_malformed_upload_length_is_400(
    client: httpx.AsyncClient, server: TusServer, value: str
) -> None:
    response = await client.post(
        "/files/", headers=[(b"Tus-Resumable", b"1.0.0"), (b"Upload-Length", value.encode())]
    )
    assert_plain_error(response, 400)
    assert server.stored_names() == set()


async def test_length_over_max_size_is_413(tus_factory: TusFactory) -> None:
    server = await tus_factory(max_size=100)
    response = await server.client.post("/files/", headers={**TUS, "Upload-Length": "101"})
    assert_plain_error(response, 413)
    assert server.stored_names() == set()
    assert (
        await server.client.post("/files/", headers={**TUS, "Upload-Length": "100"})
    ).status_code == 201


# --- Upload-Metadata ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        f"filename {b64('world_domination_plan.pdf')},is_confidential",
        f"filename {b64('x')},empty ",
        f"a {b64('1')}, b {b64('2')}",
        "",
        "solo",
        f"unicode {b64('fïlè ✓ 名前')}",
        f"k {b64('')}",
    ],
)
async def test_metadata_is_echoed_exactly(client: httpx.AsyncClient, header: str) -> None:
    url = await create(client, 1, metadata=header)
    state = await head(client, url)
    assert state.headers["Upload-Metadata"] == header


async def test_no_metadata_header_means_none_echoed(client: httpx.AsyncClient) -> None:
    url = await create(client, 1)
    state = await head(client, url)
    assert "Upload-Metadata" not in state.headers


async def test_metadata_values_are_decoded(server: TusServer) -> None:
    header = f"filename {b64('plan.pdf')},flag,blank ,name {b64('Ünïcode')}"
    url = await create(server.client, 1, metadata=header)
    info = await server.ctx.state.get(url.rsplit("/", 1)[1])
    assert info is not None
    assert info.metadata == {"filename": "plan.pdf", "flag": "", "blank": "", "name": "Ünïcode"}


@pytest.mark.parametrize(
    "header",
    [
        "filename Zm9",  # truncated base64
        "filename Zm9v!",  # not base64 at all
        "filename Zm9v YmFy",  # two values
        "my key Zm9v",  # key with a space
        f"a {b64('1')},a {b64('2')}",  # duplicate key
        f"a {b64('1')},,b {b64('2')}",  # empty pair
        ",",
        f"a {b64('1')},",
    ],
)
async def test_invalid_metadata_is_400(
    client: httpx.AsyncClient, server: TusServer, header: str
) -> None:
    response = await client.post(
        "/files/", headers={**TUS, "Upload-Length": "1", "Upload-Metadata": header}
    )
    assert_plain_error(response, 400)
    assert server.stored_names() == set()


async def test_oversized_metadata_is_rejected(tus_factory: TusFactory) -> None:
    server = await tus_factory(max_metadata_size=100)
    header = f"big {b64('x' * 200)}"
    response = await server.client.post(
        "/files/", headers={**TUS, "Upload-Length": "1", "Upload-Metadata": header}
    )
    assert 400 <= response.status_code < 500
    assert_plain_error(response, response.status_code)


# --- creation-with-upload ----------------------------------------------------------------------


async def test_creation_with_upload(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/files/",
        headers={**TUS, "Upload-Length": "10", "Content-Type": OCTET},
        content=b"hello",
    )
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "5"
    state = await head(client, response.headers["Location"])
    assert state.headers["Upload-Offset"] == "5"


async def test_creation_with_upload_of_everything_finishes(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/files/",
        headers={**TUS, "Upload-Length": "5", "Content-Type": OCTET},
        content=chunked(b"he", b"llo"),
    )
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "5"
    download = await client.get(response.headers["Location"])
    assert download.status_code == 200
    assert download.content == b"hello"


async def test_creation_with_upload_and_deferred_length(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/files/",
        headers={**TUS, "Upload-Defer-Length": "1", "Content-Type": OCTET},
        content=b"abc",
    )
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "3"
    state = await head(client, response.headers["Location"])
    assert state.headers["Upload-Defer-Length"] == "1"
    assert state.headers["Upload-Offset"] == "3"


async def test_creation_with_upload_needs_the_offset_content_type(
    client: httpx.AsyncClient, server: TusServer
) -> None:
    response = await client.post(
        "/files/",
        headers={**TUS, "Upload-Length": "5", "Content-Type": "text/plain"},
        content=b"hello",
    )
    assert_plain_error(response, 415)
    assert server.stored_names() == set()


async def test_creation_with_an_empty_body_and_content_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/files/", headers={**TUS, "Upload-Length": "5", "Content-Type": OCTET}, content=b""
    )
    assert response.status_code == 201
    assert response.headers.get("Upload-Offset", "0") == "0"


async def test_creation_body_longer_than_length_is_413_and_stores_nothing(
    client: httpx.AsyncClient, server: TusServer
) -> None:
    response = await client.post(
        "/files/",
        headers={**TUS, "Upload-Length": "3", "Content-Type": OCTET},
        content=b"too long",
    )
    assert_plain_error(response, 413)
    assert "Location" not in response.headers
    assert server.stored_names() == set()


async def test_creation_chunked_body_longer_than_length_is_413_and_stores_nothing(
    client: httpx.AsyncClient, server: TusServer
) -> None:
    response = await client.post(
        "/files/",
        headers={**TUS, "Upload-Length": "3", "Content-Type": OCTET},
        content=chunked(b"to", b"o long"),
    )
    assert_plain_error(response, 413)
    assert "Location" not in response.headers
    assert server.stored_names() == set()


async def test_creation_body_over_max_size_with_deferred_length_is_413(
    tus_factory: TusFactory,
) -> None:
    server = await tus_factory(max_size=4)
    response = await server.client.post(
        "/files/",
        headers={**TUS, "Upload-Defer-Length": "1", "Content-Type": OCTET},
        content=chunked(b"abc", b"def"),
    )
    assert_plain_error(response, 413)
    assert server.stored_names() == set()


async def test_a_hook_chosen_id_never_replaces_an_existing_upload(server: TusServer) -> None:
    """A pre-create hook that names an existing upload gets 409; that upload is unchanged, and
    of two creations racing for one new id exactly one wins (every store, every state)."""
    from tusd_py.hooks import FileInfoChanges, HookResponse, Hooks

    chosen = {"id": "doc-1"}
    server.ctx.hooks = Hooks(
        {
            "pre-create": lambda event: HookResponse(
                change_file_info=FileInfoChanges(id=chosen["id"])
            )
        }
    )
    client = server.client
    first = await client.post(
        "/files/",
        headers={**TUS, "Upload-Length": "3", "Content-Type": "application/offset+octet-stream"},
        content=b"abc",
    )
    assert first.status_code == 201, first.text
    again = await client.post(
        "/files/",
        headers={**TUS, "Upload-Length": "3", "Content-Type": "application/offset+octet-stream"},
        content=b"xyz",
    )
    assert_plain_error(again, 409)
    assert "already exists" in again.text
    assert (await client.get(first.headers["Location"])).content == b"abc"

    chosen["id"] = "doc-2"
    racing = await asyncio.gather(
        *(client.post("/files/", headers={**TUS, "Upload-Length": "5"}) for _ in range(4))
    )
    assert sorted(r.status_code for r in racing) == [201, 409, 409, 409]
