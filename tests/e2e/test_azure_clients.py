"""tus-js-client (Node build) uploads to a real server process storing in Azure Blob Storage
(Azurite); each download must match by SHA-256, and the container must hold one blob and its
`.info` per upload."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.azurite import AzuriteServer, unique_container
from tests.support.source_files import MakeFile
from tests.support.tus_js_client import assert_stored, requests_of, upload_with_js
from tests.support.tus_requests import head
from tests.support.tusd_process import StartTusd, TusdProcess
from tusd_py.stores.azure import AzureStore

MiB = 1024 * 1024

pytestmark = pytest.mark.e2e


@pytest.fixture
def container() -> str:
    return unique_container()


@pytest.fixture
def azure_tusd(
    tusd_factory: StartTusd,
    azurite: AzuriteServer,
    container: str,
    monkeypatch: pytest.MonkeyPatch,
) -> TusdProcess:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    return tusd_factory("--azure-container", container, "--azure-endpoint", azurite.endpoint)


def blob_names(azurite: AzuriteServer, container: str) -> list[str]:
    async def names() -> list[str]:
        store = AzureStore(container, connection_string=azurite.connection_string)
        await store.open()
        try:
            return sorted([str(item.name) async for item in store._containers().list_blobs()])
        finally:
            await store.close()

    return asyncio.run(names())


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_whole_file_in_one_patch(
    azure_tusd: TusdProcess, make_file: MakeFile, azurite: AzuriteServer, container: str
) -> None:
    source = make_file(20 * MiB)
    result = upload_with_js(azure_tusd.endpoint, source, chunkSize="Infinity")
    assert [p["bodyBytes"] for p in requests_of(result, "PATCH")] == [source.size]
    assert_stored(azure_tusd, result["url"], source)
    final = upload_id(result["url"])
    assert blob_names(azurite, container) == [final, f"{final}.info"]


def test_chunks_of_one_mib(azure_tusd: TusdProcess, make_file: MakeFile) -> None:
    source = make_file(5 * MiB + 512 * 1024)
    result = upload_with_js(azure_tusd.endpoint, source, chunkSize=MiB)
    patches = requests_of(result, "PATCH")
    assert [p["bodyBytes"] for p in patches] == [MiB] * 5 + [512 * 1024]
    assert_stored(azure_tusd, result["url"], source)


def test_deferred_length(azure_tusd: TusdProcess, make_file: MakeFile) -> None:
    source = make_file(3 * MiB + 12345)
    result = upload_with_js(
        azure_tusd.endpoint,
        source,
        chunkSize=MiB,
        uploadLengthDeferred=True,
        deferredSource="stream",
    )
    patches = requests_of(result, "PATCH")
    assert [p.get("declaresLength") for p in patches][-1] == source.size
    assert_stored(azure_tusd, result["url"], source)


def test_aborted_half_way_then_resumed(azure_tusd: TusdProcess, make_file: MakeFile) -> None:
    source = make_file(8 * MiB)
    cut = 3 * MiB
    result = upload_with_js(azure_tusd.endpoint, source, chunkSize="Infinity", abortAfterBytes=cut)
    # What arrived before the connection dropped was staged and committed as a short block.
    assert 0 < result["resumedFromOffset"] <= cut, result
    last_patch = requests_of(result, "PATCH")[-1]
    assert last_patch["bodyBytes"] == source.size - result["resumedFromOffset"]
    assert_stored(azure_tusd, result["url"], source)


@pytest.mark.parametrize("size", [40 * MiB, 3 * MiB + 17], ids=["40MiB", "3MiB"])
def test_parallel_uploads_concatenate(
    azure_tusd: TusdProcess,
    make_file: MakeFile,
    azurite: AzuriteServer,
    container: str,
    size: int,
) -> None:
    source = make_file(size)
    result = upload_with_js(azure_tusd.endpoint, source, parallelUploads=4)
    posts = requests_of(result, "POST")
    assert len(posts) == 5 and all(p["status"] == 201 for p in posts)
    assert_stored(azure_tusd, result["url"], source)
    for post in posts[:4]:
        assert head(post["headers"]["Location"]).status_code == 404
    final = upload_id(result["url"])
    assert blob_names(azurite, container) == [final, f"{final}.info"]
