"""AzureStore against Azurite over real HTTP (fixture `azurite`), one container per test.

The tests drive the store directly, the way the protocol layer does: `write()` with a commit
callback standing in for the state store, then `finish()` once the last byte is committed. Blocks
are made small (64 KiB) so that a few hundred KiB cross many block boundaries.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.azurite import ACCOUNT, ACCOUNT_KEY, AzuriteServer, unique_container
from tests.support.payloads import chunked, payload, sha256
from tests.support.processes import free_port
from tusd_py.errors import TusError, lock_lost
from tusd_py.info import UploadInfo
from tusd_py.stores import azure
from tusd_py.stores.azure import MAX_BLOCKS, MIB, AzureStore, Block, choose_block_size
from tusd_py.stores.base import Capability, capabilities

BLOCK = 64 * 1024


@pytest.fixture
async def store(azurite: AzuriteServer) -> AsyncIterator[AzureStore]:
    store = AzureStore(
        unique_container(), connection_string=azurite.connection_string, block_size=BLOCK
    )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class Source:
    """A request body: `data` in chunks, then optionally an error; records when it raised."""

    def __init__(self, data: bytes, chunk: int, error: BaseException | None = None) -> None:
        self.data, self.chunk, self.error = data, chunk, error
        self.raised = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in chunked(self.data, self.chunk):
            yield piece
        if self.error is not None:
            self.raised = True
            raise self.error


class FakeState:
    """Stands in for the state store: records commits and moves info.offset."""

    def __init__(self, info: UploadInfo, source: Source | None = None) -> None:
        self.info, self.source = info, source
        self.commits: list[int] = []
        self.fail_after: int | None = None  # commits allowed before the lock is "lost"

    async def commit(self, offset: int) -> None:
        assert self.source is None or not self.source.raised, "committed after the body failed"
        if self.fail_after is not None and len(self.commits) >= self.fail_after:
            raise lock_lost(self.info.id)
        assert offset > self.info.offset, "commits only move forward"
        self.commits.append(offset)
        self.info.offset = offset


async def patch(store: AzureStore, info: UploadInfo, data: bytes, chunk: int = 10_000) -> int:
    state = FakeState(info)
    end = await store.write(info, chunked(data, chunk), state.commit)
    assert end == info.offset, "write() returns the last committed offset"
    if info.finished:
        await store.finish(info)
    return end


async def new_upload(store: AzureStore, length: int | None) -> UploadInfo:
    info = UploadInfo(id=uuid.uuid4().hex, length=length)
    await store.create(info)
    return info


async def stored(store: AzureStore, info: UploadInfo) -> bytes:
    return b"".join([chunk async for chunk in store.read(info, 0, info.offset)])


async def committed_blocks(store: AzureStore, info: UploadInfo) -> list[Block]:
    return (await store._committed_blocks(store._blob(info), info.id))[0]


# -- pure helpers ------------------------------------------------------------------------------


def test_block_ids_are_fixed_length_and_name_their_bytes() -> None:
    ids = {Block(offset, size).id for offset, size in [(0, 1), (8 * MIB, 8 * MIB), (10**15, 7)]}
    assert len({len(block_id) for block_id in ids}) == 1
    assert Block.parse(Block(123, 456).id) == Block(123, 456)


def test_block_size_grows_to_fit_the_length_in_50000_blocks() -> None:
    assert choose_block_size(10 * MIB, 8 * MIB) == 8 * MIB
    assert choose_block_size(1024**4, 8 * MIB) == 21 * MIB  # 1 TiB / 50,000, rounded up to MiB
    assert choose_block_size(None, 8 * MIB, max_size=1024**4) == 21 * MIB
    assert choose_block_size(10 * 1024**4, 8 * MIB) == 64 * MIB  # capped
    assert choose_block_size(None, BLOCK) == BLOCK


def test_capabilities_come_from_the_methods() -> None:
    assert capabilities(AzureStore("c", connection_string="x")) == {
        Capability.TERMINATION,
        Capability.CONCATENATION,
        Capability.DEFER_LENGTH,
        Capability.DOWNLOAD,
    }


# -- core ----------------------------------------------------------------------------------------


async def test_create_writes_an_empty_blob_and_the_info(store: AzureStore) -> None:
    info = await new_upload(store, 1000)
    assert store.describe(info) == {
        "Type": "azurestore",
        "Container": store.container,
        "Key": info.id,
    }
    assert await store.stored_offset(info) == 0
    loaded = await store.load_info(info.id)
    assert loaded is not None and loaded.length == 1000 and loaded.storage == info.storage
    with pytest.raises(TusError) as exc:
        await store.create(UploadInfo(id=info.id, length=5))
    assert exc.value.status == 409


async def test_write_in_pieces_commits_in_order(
    store: AzureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(azure, "COMMIT_SIZE", 2 * BLOCK)
    data = payload(10 * BLOCK + 12_345)
    info = await new_upload(store, len(data))
    state = FakeState(info)
    first = 3 * BLOCK + 100  # ends inside a block
    end = await store.write(info, chunked(data[:first], 7_000), state.commit)
    assert end == first == state.commits[-1]
    assert state.commits == sorted(set(state.commits)) and len(state.commits) >= 2
    assert await store.stored_offset(info) == first
    await patch(store, info, data[first:], 30_000)
    assert info.offset == len(data)
    assert sha256(await stored(store, info)) == sha256(data)
    blocks = await committed_blocks(store, info)
    assert blocks[0].offset == 0 and blocks[-1].end == len(data)
    assert max(block.size for block in blocks) == BLOCK


async def test_a_failing_body_commits_nothing_more(
    store: AzureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(azure, "COMMIT_SIZE", BLOCK)
    data = payload(5 * BLOCK + 500)
    info = await new_upload(store, 10 * BLOCK)
    source = Source(data, 4096, ValueError("checksum mismatch"))
    state = FakeState(info, source)
    with pytest.raises(ValueError, match="checksum"):
        await store.write(info, source, state.commit)
    committed = info.offset
    assert 0 < committed < len(data) and committed % BLOCK == 0
    assert await store.stored_offset(info) == committed
    # The client resumes from the committed offset.
    rest = payload(10 * BLOCK, seed=2)[committed:]
    await patch(store, info, rest)
    assert await stored(store, info) == data[:committed] + rest


async def test_an_empty_body_commits_nothing(store: AzureStore) -> None:
    info = await new_upload(store, 10)
    state = FakeState(info)
    assert await store.write(info, chunked(b"", 1), state.commit) == 0
    assert state.commits == []


async def test_a_lost_lock_stops_the_writer(store: AzureStore) -> None:
    data = payload(4 * BLOCK)
    info = await new_upload(store, len(data))
    state = FakeState(info)
    state.fail_after = 0
    with pytest.raises(TusError) as exc:
        await store.write(info, chunked(data, 10_000), state.commit)
    assert exc.value.code == "lock-lost" and info.offset == 0
    # Its Put Block List landed before the commit failed: the blob runs ahead of the offset,
    # and the next PATCH from the committed offset replaces it.
    assert await store.stored_offset(info) == len(data)
    other = payload(len(data), seed=3)
    await patch(store, info, other)
    assert await stored(store, info) == other


async def test_a_stale_writer_cannot_replace_a_newer_block_list(store: AzureStore) -> None:
    data = payload(3 * BLOCK)
    info = await new_upload(store, 2 * len(data))
    stale = UploadInfo.from_json(info.to_json())
    go_on = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        await go_on.wait()
        yield data

    stale_state = FakeState(stale)
    stale_write = asyncio.create_task(store.write(stale, slow_body(), stale_state.commit))
    await asyncio.sleep(0.2)  # it has read the block list and waits for its body
    await patch(store, info, data)  # the request that took the upload over commits
    go_on.set()
    with pytest.raises(TusError) as exc:
        await stale_write
    assert exc.value.code == "lock-lost" and stale_state.commits == []
    assert await store.stored_offset(info) == len(data)


async def test_a_patch_inside_a_block_restages_its_head(store: AzureStore) -> None:
    data = payload(BLOCK)
    info = await new_upload(store, 2 * BLOCK)
    await patch(store, info, data)
    info.offset = 1000  # committed through an earlier list a stale writer replaced
    rest = payload(2 * BLOCK - 1000, seed=4)
    await patch(store, info, rest)
    assert await stored(store, info) == data[:1000] + rest


async def test_the_block_limit_is_refused_with_413(
    store: AzureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(azure, "MAX_BLOCKS", 3)
    info = await new_upload(store, None)
    with pytest.raises(TusError) as exc:
        await patch(store, info, payload(4 * BLOCK))
    assert exc.value.status == 413
    assert info.offset <= 3 * BLOCK


async def test_finish_sets_the_access_tier_and_is_idempotent(azurite: AzuriteServer) -> None:
    store = AzureStore(
        unique_container(),
        connection_string=azurite.connection_string,
        access_tier="cool",
        block_size=BLOCK,
    )
    await store.open()
    try:
        data = payload(BLOCK + 1)
        info = await new_upload(store, len(data))
        await patch(store, info, data)
        await store.finish(info)
        properties = await store._blob(info).get_blob_properties()
        assert properties.blob_tier == "Cool"
        assert await stored(store, info) == data
    finally:
        await store.close()


async def test_read_streams_a_range(store: AzureStore) -> None:
    data = payload(3 * BLOCK)
    info = await new_upload(store, len(data))
    await patch(store, info, data)
    part = b"".join([c async for c in store.read(info, BLOCK - 10, 2 * BLOCK + 10)])
    assert part == data[BLOCK - 10 : 2 * BLOCK + 10]
    assert [c async for c in store.read(info, 5, 5)] == []


async def test_terminate_removes_everything_and_tolerates_gone(store: AzureStore) -> None:
    info = await new_upload(store, 10)
    await patch(store, info, b"0123456789")
    other = await new_upload(store, 5)
    assert sorted([i async for i in store.list_upload_ids()]) == sorted([info.id, other.id])
    await store.terminate(info)
    await store.terminate(info)
    assert await store.load_info(info.id) is None
    assert [i async for i in store.list_upload_ids()] == [other.id]
    with pytest.raises(TusError) as exc:
        await store.write(info, chunked(b"x", 1), FakeState(info).commit)
    assert exc.value.status == 404


async def test_list_upload_ids_stays_under_the_prefix(azurite: AzuriteServer) -> None:
    container = unique_container()
    stores = [
        AzureStore(container, connection_string=azurite.connection_string, prefix=prefix)
        for prefix in ("a/", "b/")
    ]
    for store in stores:
        await store.open()
    try:
        first = await new_upload(stores[0], 1)
        second = await new_upload(stores[1], 1)
        assert [i async for i in stores[0].list_upload_ids()] == [first.id]
        assert [i async for i in stores[1].list_upload_ids()] == [second.id]
        assert stores[0].describe(first)["Key"] == f"a/{first.id}"
    finally:
        for store in stores:
            await store.close()


async def test_info_and_offset_rebuild_from_storage(store: AzureStore) -> None:
    data = payload(2 * BLOCK + 7)
    info = await new_upload(store, 4 * BLOCK)
    await patch(store, info, data)
    loaded = await store.load_info(info.id)
    assert loaded is not None and loaded.id == info.id
    assert await store.stored_offset(loaded) == len(data)
    assert await store.load_info(uuid.uuid4().hex) is None


async def test_zero_length_upload_is_an_empty_blob(store: AzureStore) -> None:
    info = await new_upload(store, 0)
    assert info.finished
    await store.finish(info)
    assert await store.stored_offset(info) == 0
    properties = await store._blob(info).get_blob_properties()
    assert properties.size == 0


async def test_deferred_length(store: AzureStore) -> None:
    data = payload(2 * BLOCK + 3)
    info = await new_upload(store, None)
    await patch(store, info, data[:BLOCK])
    info.length = len(data)
    await store.declare_length(info)
    await store.save_info(info)
    await patch(store, info, data[BLOCK:])
    assert await stored(store, info) == data
    too_long = await new_upload(store, None)
    too_long.length = MAX_BLOCKS * BLOCK + 1
    with pytest.raises(TusError) as exc:
        await store.declare_length(too_long)
    assert exc.value.status == 413


async def test_concatenation(store: AzureStore) -> None:
    pieces = [payload(BLOCK * 2 + 5, 1), b"", payload(17, 2), payload(BLOCK, 3)]
    partials = []
    for piece in pieces:
        partial = await new_upload(store, len(piece))
        partial.concat = "partial"
        await patch(store, partial, piece)
        await store.finish(partial)
        partials.append(partial)
    final = await new_upload(store, sum(map(len, pieces)))
    await store.concatenate(final, partials)
    await store.concatenate(final, partials)  # a retry rewrites the same blocks
    assert await store.stored_offset(final) == final.length
    final.offset = final.length or 0
    await store.finish(final)
    assert sha256(await stored(store, final)) == sha256(b"".join(pieces))
    # Azurite lacks Put Block From URL: the store noticed and copied through itself.
    assert store._copy_from_url is False


# -- errors --------------------------------------------------------------------------------------


async def test_an_unreachable_service_is_503(caplog: pytest.LogCaptureFixture) -> None:
    store = AzureStore(
        unique_container(),
        endpoint=f"http://127.0.0.1:{free_port()}/{ACCOUNT}",
        account=ACCOUNT,
        account_key=ACCOUNT_KEY,
        retries=0,
        connect_timeout=2,
    )
    await store.open()  # logs a warning, does not fail: /ready reports it
    try:
        with pytest.raises(TusError) as exc:
            await store.create(UploadInfo(id=uuid.uuid4().hex, length=1))
        assert exc.value.status == 503 and "Retry-After" in exc.value.headers
        assert "Azure Put Blob" in exc.value.message
        with pytest.raises(TusError) as exc:
            await store.ready()
        assert exc.value.status == 503
    finally:
        await store.close()


async def test_a_deleted_container_is_a_configuration_error_not_an_outage(
    store: AzureStore,
) -> None:
    """Retrying cannot fix a missing container: the answer says the storage is misconfigured
    instead of telling the client to resume shortly."""
    await store._containers().delete_container()
    with pytest.raises(TusError) as exc:
        await store.create(UploadInfo(id=uuid.uuid4().hex, length=1))
    assert exc.value.status == 500 and exc.value.code == "storage-misconfigured"
    assert "container does not exist" in exc.value.message
    assert "resume" not in exc.value.message and exc.value.operation == "Azure Put Blob"


async def test_a_wrong_account_key_is_a_configuration_error(azurite: AzuriteServer) -> None:
    store = AzureStore(
        unique_container(),
        endpoint=azurite.endpoint,
        account=ACCOUNT,
        account_key="d3Jvbmcga2V5" * 8,  # base64, but not the account's key
        retries=0,
    )
    await store.open()  # logs a warning, does not fail: /ready reports it
    try:
        with pytest.raises(TusError) as exc:
            await store.create(UploadInfo(id=uuid.uuid4().hex, length=1))
        assert exc.value.code == "storage-misconfigured", exc.value.message
        assert "refused the credentials" in exc.value.message
    finally:
        await store.close()


def test_credentials_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    store = AzureStore("c")
    with pytest.raises(ValueError, match="AZURE_STORAGE_CONNECTION_STRING"):
        store._service_client()


def test_from_config_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tusd_py.app import store_class
    from tusd_py.config import Config

    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_KEY", ACCOUNT_KEY)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    config = Config(azure_container="c", azure_prefix="p/", azure_blob_access_tier="hot")
    assert store_class(config) is AzureStore
    store = AzureStore.from_config(config)
    assert (store.prefix, store.access_tier) == ("p/", "Hot")
    client: Any = store._service_client()
    assert client.url.startswith(f"https://{ACCOUNT}.blob.core.windows.net")


async def test_concatenation_by_server_side_copy(
    store: AzureStore, azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Azurite lacks Put Block From URL, so the service's side is played here: the test checks
    the store asks for the right ranges with a read SAS, then stages those bytes itself."""
    from urllib.parse import parse_qs, urlsplit

    from azure.storage.blob.aio import BlobClient

    monkeypatch.setattr(azure, "COPY_SIZE", BLOCK)
    requests: list[tuple[str, int, int]] = []
    stage_block = BlobClient.stage_block

    async def from_url(
        self: BlobClient, block_id: str, source_url: str, **kwargs: Any
    ) -> dict[str, Any]:
        url = urlsplit(source_url)
        query = parse_qs(url.query)
        assert query["sp"] == ["r"] and "sig" in query
        offset, length = kwargs["source_offset"], kwargs["source_length"]
        requests.append((url.path.rsplit("/", 1)[1], offset, length))
        source = BlobClient.from_connection_string(
            azurite.connection_string, store.container, url.path.rsplit("/", 1)[1]
        )
        async with source:
            data = await (await source.download_blob(offset=offset, length=length)).readall()
        return await stage_block(self, block_id, data, length=len(data))

    monkeypatch.setattr(BlobClient, "stage_block_from_url", from_url)
    pieces = [payload(2 * BLOCK + 5, 1), payload(17, 2)]
    partials = []
    for piece in pieces:
        partial = await new_upload(store, len(piece))
        await patch(store, partial, piece)
        partials.append(partial)
    final = await new_upload(store, sum(map(len, pieces)))
    await store.concatenate(final, partials)
    assert store._copy_from_url is True
    first, second = (p.id for p in partials)
    assert requests == [
        (first, 0, BLOCK),
        (first, BLOCK, BLOCK),
        (first, 2 * BLOCK, 5),
        (second, 0, 17),
    ]
    final.offset = final.length or 0
    assert await stored(store, final) == b"".join(pieces)


async def test_a_failing_service_is_503_and_keeps_what_was_committed(
    store: AzureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.core.exceptions import ServiceResponseError
    from azure.storage.blob.aio import BlobClient

    monkeypatch.setattr(azure, "COMMIT_SIZE", BLOCK)
    stage_block = BlobClient.stage_block
    calls = 0

    async def flaky(self: BlobClient, *args: Any, **kwargs: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ServiceResponseError("connection reset by peer")
        return await stage_block(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "stage_block", flaky)
    data = payload(5 * BLOCK)
    info = await new_upload(store, len(data))
    with pytest.raises(TusError) as exc:
        await store.write(info, chunked(data, 8192), FakeState(info).commit)
    assert exc.value.status == 503 and exc.value.headers["Retry-After"]
    assert "Put Block" in exc.value.message and "connection reset" in exc.value.message
    assert info.offset == 2 * BLOCK == await store.stored_offset(info)
    await patch(store, info, data[info.offset :])
    assert await stored(store, info) == data


async def test_a_container_from_before_the_index_is_indexed_by_the_first_sweep(
    store: AzureStore, azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    going = await new_upload(store, 10)
    await patch(store, going, b"abc")
    done = await new_upload(store, 3)
    await patch(store, done, b"abc")
    await store.save_info(done)  # as the state store does once an upload is finished
    container = store._containers()
    names = [str(name) async for name in container.list_blob_names()]
    assert sorted(n for n in names if n.startswith(".index/")) == [
        ".index/built",
        f".index/unfinished/{going.id}",
    ]
    for name in names:  # as an older version left the container
        if name.startswith(".index/"):
            await container.delete_blob(name)

    again = AzureStore(store.container, connection_string=azurite.connection_string)
    await again.open()
    try:
        read: list[str] = []
        load_info = again.load_info

        async def counted(upload_id: str) -> UploadInfo | None:
            read.append(upload_id)
            return await load_info(upload_id)

        monkeypatch.setattr(again, "load_info", counted)
        assert [i async for i in again.list_unfinished_ids()] == [going.id]
        assert sorted(read) == sorted([going.id, done.id])  # the one walk
        read.clear()
        assert [i async for i in again.list_unfinished_ids()] == [going.id]
        assert read == []
        await again.forget_unfinished(going.id)
        assert [i async for i in again.list_unfinished_ids()] == []
    finally:
        await again.close()
