"""concatenation and concatenation-unfinished: partials joined into a final upload."""

from __future__ import annotations

import hashlib
import random
from urllib.parse import urlsplit

import httpx
import pytest

from tests.protocol.conftest import TusFactory, TusServer
from tests.protocol.helpers import TUS, assert_plain_error, b64, create, head, patch, upload
from tusd_py.errors import TusError
from tusd_py.info import UploadInfo
from tusd_py.locking.base import Lock

MiB = 1024 * 1024


def data_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def partial(client: httpx.AsyncClient, data: bytes, *, finish: bool = True) -> str:
    url = await create(client, len(data), headers={"Upload-Concat": "partial"})
    if finish and data:
        response = await patch(client, url, 0, data)
        assert response.status_code == 204, response.text
    return url


async def final(client: httpx.AsyncClient, *urls: str, **headers: str) -> httpx.Response:
    return await client.post(
        "/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(urls), **headers}
    )


async def assert_content(client: httpx.AsyncClient, url: str, data: bytes) -> None:
    state = await head(client, url)
    assert state.status_code == 200
    assert state.headers["Upload-Offset"] == state.headers["Upload-Length"] == str(len(data))
    response = await client.get(url, headers=TUS)
    assert response.status_code == 200, response.text
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_options_advertises_concatenation(client: httpx.AsyncClient) -> None:
    extensions = (await client.options("/files/")).headers["Tus-Extension"].split(",")
    assert "concatenation" in extensions
    assert "concatenation-unfinished" in extensions


async def test_partial_head_says_partial(client: httpx.AsyncClient) -> None:
    url = await partial(client, b"abc", finish=False)
    state = await head(client, url)
    assert state.headers["Upload-Concat"] == "partial"
    assert state.headers["Upload-Offset"] == "0"


async def test_final_of_finished_partials_absolute_urls(client: httpx.AsyncClient) -> None:
    parts = [data_of(1000, 1), data_of(1, 2), data_of(70_000, 3)]
    urls = [await partial(client, p) for p in parts]
    response = await final(client, *urls, **{"Upload-Metadata": "filename " + b64("all.bin")})
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == str(sum(map(len, parts)))
    url = response.headers["Location"]
    await assert_content(client, url, b"".join(parts))
    state = await head(client, url)
    assert state.headers["Upload-Concat"] == "final;" + " ".join(urls)
    assert state.headers["Upload-Metadata"] == "filename " + b64("all.bin")


async def test_final_with_relative_urls(client: httpx.AsyncClient) -> None:
    parts = [data_of(300, 4), data_of(500, 5)]
    urls = [await partial(client, p) for p in parts]
    path_only = urlsplit(urls[0]).path  # "/files/<id>"
    bare_id = urls[1].rsplit("/", 1)[1]  # relative to the endpoint
    response = await final(client, path_only, bare_id)
    assert response.status_code == 201, response.text
    await assert_content(client, response.headers["Location"], b"".join(parts))


async def test_partials_are_deleted_once_the_final_is_assembled(server: TusServer) -> None:
    client = server.client
    urls = [await partial(client, data_of(100, n)) for n in range(3)]
    response = await final(client, *urls)
    assert response.status_code == 201
    for url in urls:
        assert (await head(client, url)).status_code == 404
    # Reusing a partial of an assembled final: it is gone.
    again = await final(client, urls[0])
    assert_plain_error(again, 404)
    final_id = response.headers["Location"].rsplit("/", 1)[1]
    assert not any(
        url.rsplit("/", 1)[1] in name for url in urls for name in server.stored_names()
    ), server.stored_names()
    assert any(final_id in name for name in server.stored_names())


async def test_zero_length_partials(client: httpx.AsyncClient) -> None:
    urls = [await partial(client, b""), await partial(client, b"xyz"), await partial(client, b"")]
    response = await final(client, *urls)
    assert response.status_code == 201, response.text
    await assert_content(client, response.headers["Location"], b"xyz")


async def test_unfinished_concatenation(client: httpx.AsyncClient) -> None:
    parts = [data_of(2000, 10), data_of(3000, 11), data_of(10, 12)]
    urls = [await partial(client, p, finish=False) for p in parts]
    # One partial is already done, one half way, one untouched.
    assert (await patch(client, urls[2], 0, parts[2])).status_code == 204
    assert (await patch(client, urls[0], 0, parts[0][:500])).status_code == 204

    response = await final(client, *urls)
    assert response.status_code == 201, response.text
    assert "Upload-Offset" not in response.headers
    url = response.headers["Location"]
    state = await head(client, url)
    assert state.status_code == 200
    assert state.headers["Upload-Length"] == str(sum(map(len, parts)))
    assert "Upload-Offset" not in state.headers  # not assembled yet
    assert state.headers["Upload-Concat"] == "final;" + " ".join(urls)
    assert (await client.get(url, headers=TUS)).status_code == 409  # unfinished

    # A partial claimed by this final cannot go into another one.
    other = await final(client, urls[1])
    assert_plain_error(other, 400)
    assert "already belongs" in other.text

    assert (await patch(client, urls[0], 500, parts[0][500:])).status_code == 204
    assert "Upload-Offset" not in (await head(client, url)).headers
    last = await patch(client, urls[1], 0, parts[1])
    assert last.status_code == 204
    assert last.headers["Upload-Offset"] == str(len(parts[1]))
    await assert_content(client, url, b"".join(parts))
    for partial_url in urls:
        assert (await head(client, partial_url)).status_code == 404


async def test_unfinished_partials_need_a_known_length(client: httpx.AsyncClient) -> None:
    deferred = await create(
        client, None, headers={"Upload-Concat": "partial"}
    )  # Upload-Defer-Length: 1
    response = await final(client, deferred)
    assert_plain_error(response, 400)
    assert "length" in response.text
    # Once its length is declared it can join a final.
    assert (await patch(client, deferred, 0, b"ab", **{"Upload-Length": "4"})).status_code == 204
    response = await final(client, deferred)
    assert response.status_code == 201, response.text
    assert (await patch(client, deferred, 2, b"cd")).status_code == 204
    await assert_content(client, response.headers["Location"], b"abcd")


async def test_patch_on_final_is_403(client: httpx.AsyncClient) -> None:
    url = (await final(client, await partial(client, b"a", finish=False))).headers["Location"]
    response = await patch(client, url, 0, b"a")
    assert_plain_error(response, 403)
    done = (await final(client, await partial(client, b"b"))).headers["Location"]
    assert_plain_error(await patch(client, done, 1, b""), 403)


async def test_unknown_partial_is_404(client: httpx.AsyncClient) -> None:
    response = await final(client, "/files/0123456789abcdef0123456789abcdef")
    assert_plain_error(response, 404)
    assert "does not exist" in response.text


async def test_non_partial_is_400(client: httpx.AsyncClient) -> None:
    plain = await upload(client, b"plain upload")
    response = await final(client, plain)
    assert_plain_error(response, 400)
    assert "partial" in response.text


@pytest.mark.parametrize(
    "url",
    [
        "http://elsewhere.example/files/{id}",
        "http://testserver/other/{id}",
        "http://testserver/files/{id}/extra",
        "http://testserver/files/..%2F{id}",
        "/files/",
    ],
)
async def test_foreign_partial_is_400(client: httpx.AsyncClient, url: str) -> None:
    upload_id = (await partial(client, b"x")).rsplit("/", 1)[1]
    response = await final(client, url.format(id=upload_id))
    assert_plain_error(response, 400)
    assert "not an upload URL of this server" in response.text


async def test_duplicate_partial_is_400(client: httpx.AsyncClient) -> None:
    url = await partial(client, b"x")
    response = await final(client, url, url)
    assert_plain_error(response, 400)
    assert "twice" in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Upload-Concat": "final;"},
        {"Upload-Concat": "final"},
        {"Upload-Concat": "partial;x"},
        {"Upload-Concat": "whole"},
    ],
)
async def test_malformed_upload_concat_is_400(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/files/", headers={**TUS, "Upload-Length": "1", **headers})
    assert_plain_error(response, 400)


async def test_final_with_upload_length_is_400(client: httpx.AsyncClient) -> None:
    url = await partial(client, b"x")
    assert_plain_error(await final(client, url, **{"Upload-Length": "1"}), 400)
    assert_plain_error(await final(client, url, **{"Upload-Defer-Length": "1"}), 400)


async def test_final_with_body_is_400(client: httpx.AsyncClient) -> None:
    url = await partial(client, b"x")
    response = await client.post(
        "/files/",
        headers={
            **TUS,
            "Upload-Concat": "final;" + url,
            "Content-Type": "application/offset+octet-stream",
        },
        content=b"data",
    )
    assert_plain_error(response, 400)


async def test_final_over_max_size_is_413(tus_factory: TusFactory) -> None:
    server = await tus_factory(max_size=100)
    urls = [await partial(server.client, data_of(60, n)) for n in range(2)]
    assert_plain_error(await final(server.client, *urls), 413)
    # Nothing happened to the partials.
    for url in urls:
        assert (await head(server.client, url)).headers["Upload-Offset"] == "60"


async def test_rejected_final_leaves_partials_untouched(client: httpx.AsyncClient) -> None:
    good = await partial(client, b"good")
    response = await final(client, good, "/files/0123456789abcdef0123456789abcdef")
    assert_plain_error(response, 404)
    state = await head(client, good)
    assert state.headers["Upload-Offset"] == "4"
    # And it can still be used.
    response = await final(client, good)
    assert response.status_code == 201
    await assert_content(client, response.headers["Location"], b"good")


async def test_large_partials(client: httpx.AsyncClient) -> None:
    """Partials above and below S3's 5 MiB part minimum, in one final."""
    parts = [data_of(6 * MiB + 3, 20), data_of(MiB, 21), data_of(5 * MiB, 22), data_of(17, 23)]
    urls = [await partial(client, p) for p in parts]
    response = await final(client, *urls)
    assert response.status_code == 201, response.text
    await assert_content(client, response.headers["Location"], b"".join(parts))


async def test_deleting_a_final_keeps_its_partials(client: httpx.AsyncClient) -> None:
    urls = [await partial(client, b"abc", finish=False)]
    url = (await final(client, *urls)).headers["Location"]
    assert (await client.delete(url, headers=TUS)).status_code == 204
    assert (await head(client, url)).status_code == 404
    # The partial stays; finishing it does not resurrect the final.
    assert (await patch(client, urls[0], 0, b"abc")).status_code == 204
    assert (await head(client, urls[0])).headers["Upload-Offset"] == "3"
    assert (await head(client, url)).status_code == 404


async def test_mixed_partials_assemble_into_one_object(server: TusServer) -> None:
    """S3: a partial of >= 5 MiB is copied by S3 (UploadPartCopy); smaller ones are gathered
    into uploaded parts of >= 5 MiB; one completed object remains. File: one file remains."""
    client = server.client
    sizes = [6 * MiB + 3, MiB, 2 * MiB, 5 * MiB, 17]
    parts = [data_of(size, 30 + n) for n, size in enumerate(sizes)]
    urls = [await partial(client, p) for p in parts]
    store = server.ctx.store
    counts = getattr(store, "request_counts", None)
    before = dict(counts) if counts is not None else {}
    response = await final(client, *urls)
    assert response.status_code == 201, response.text
    url = response.headers["Location"]
    await assert_content(client, url, b"".join(parts))
    final_id = url.rsplit("/", 1)[1]
    names = server.stored_names()
    assert {n for n in names if not n.endswith(".info")} == {
        n for n in names if final_id in n and not n.endswith(".info")
    }, names
    if counts is not None:  # the S3 store: copy for the large partial, gather the small ones
        assert counts["upload_part_copy"] - before.get("upload_part_copy", 0) == 1
        assert counts["upload_part"] - before.get("upload_part", 0) == 2
        assert not any(n.startswith("multipart:") for n in names), names


async def test_failed_assembly_leaves_the_partials_reusable(
    server: TusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = server.client
    urls = [await partial(client, b"abc"), await partial(client, b"def")]
    store = server.ctx.store

    async def unavailable(final: object, partials: object) -> None:
        raise TusError(503, "storage-unavailable", "the storage is down")

    before = server.stored_names()
    monkeypatch.setattr(store, "concatenate", unavailable)
    assert_plain_error(await final(client, *urls), 503)
    assert server.stored_names() == before  # no half-made final
    monkeypatch.undo()
    response = await final(client, *urls)
    assert response.status_code == 201, response.text
    await assert_content(client, response.headers["Location"], b"abcdef")


async def test_failed_claim_releases_the_partials(
    server: TusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = server.client
    urls = [await partial(client, b"abc", finish=False) for _ in range(3)]
    state = server.ctx.state
    real_update = state.update
    calls = 0

    async def flaky_update(info: UploadInfo, lock: Lock | None) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise TusError(503, "storage-unavailable", "the state store is down")
        await real_update(info, lock)

    monkeypatch.setattr(state, "update", flaky_update)
    assert_plain_error(await final(client, *urls), 503)
    monkeypatch.undo()
    response = await final(client, *urls)  # not "already belongs to another final"
    assert response.status_code == 201, response.text
    for url in urls:
        assert (await patch(client, url, 0, b"abc")).status_code == 204
    await assert_content(client, response.headers["Location"], b"abc" * 3)


async def test_failed_unfinished_assembly_is_retried_by_head(
    server: TusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = server.client
    urls = [await partial(client, b"12", finish=False), await partial(client, b"345")]
    url = (await final(client, *urls)).headers["Location"]

    async def unavailable(final: object, partials: object) -> None:
        raise TusError(503, "storage-unavailable", "the storage is down")

    monkeypatch.setattr(server.ctx.store, "concatenate", unavailable)
    # The partial's PATCH succeeds: its bytes are committed whatever happens to the final.
    response = await patch(client, urls[0], 0, b"12")
    assert response.status_code == 204
    state = await head(client, url)  # tries to assemble, fails, still answers
    assert state.status_code == 200
    assert "Upload-Offset" not in state.headers
    monkeypatch.undo()
    await assert_content(client, url, b"12345")  # the HEAD in there assembles it


async def test_partial_whose_completion_failed_is_completed_first(
    server: TusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = server.client
    url = await partial(client, data_of(6 * MiB, 40), finish=False)
    data = data_of(6 * MiB, 40)

    async def unavailable(info: object) -> None:
        raise TusError(503, "storage-unavailable", "the storage is down")

    monkeypatch.setattr(server.ctx.store, "finish", unavailable)
    assert_plain_error(await patch(client, url, 0, data), 503)  # bytes committed, not completed
    monkeypatch.undo()
    response = await final(client, url, await partial(client, b"tail"))
    assert response.status_code == 201, response.text
    await assert_content(client, response.headers["Location"], data + b"tail")


async def test_a_claimed_partial_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    parts = [data_of(100, 30), data_of(200, 31)]
    urls = [await partial(client, parts[0]), await partial(client, parts[1], finish=False)]
    url = (await final(client, *urls)).headers["Location"]
    for claimed in urls:
        refused = await client.delete(claimed, headers=TUS)
        assert_plain_error(refused, 409)
        assert "delete the final first" in refused.text
    assert (await patch(client, urls[1], 0, parts[1])).status_code == 204
    await assert_content(client, url, b"".join(parts))


async def test_deleting_an_unassembled_final_frees_its_partials(client: httpx.AsyncClient) -> None:
    parts = [data_of(100, 32), data_of(200, 33)]
    urls = [await partial(client, parts[0]), await partial(client, parts[1], finish=False)]
    first = (await final(client, *urls)).headers["Location"]
    assert (await client.delete(first, headers=TUS)).status_code == 204
    # Free again: another final may claim them, and then assembles from them.
    second = await final(client, *urls)
    assert second.status_code == 201, second.text
    assert (await patch(client, urls[1], 0, parts[1])).status_code == 204
    await assert_content(client, second.headers["Location"], b"".join(parts))
    # Or, freed by a deletion, a partial can be deleted.
    spare = await partial(client, b"xyz", finish=False)
    third = (await final(client, spare)).headers["Location"]
    assert (await client.delete(third, headers=TUS)).status_code == 204
    assert (await client.delete(spare, headers=TUS)).status_code == 204
