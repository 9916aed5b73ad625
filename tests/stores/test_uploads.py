"""The contract, part 1: an upload's life in storage (create, `.info`, terminate, listing)."""

from __future__ import annotations

import random
import time

from tests.stores.conftest import Medium
from tests.stores.helpers import new_info, stored_bytes, uploaded, write
from tests.support.payloads import heavy_metadata, payload
from tusd_py.ids import new_upload_id
from tusd_py.info import UploadInfo
from tusd_py.stores.base import DataStore, FinishedRetainer, UnfinishedLister, capabilities


async def test_create_saves_the_info(medium: Medium, store: DataStore) -> None:
    info = new_info(1000)
    await store.create(info)
    assert await store.load_info(info.id) == info
    assert await (await medium.open()).load_info(info.id) == info, "the .info is in the medium"
    assert await store.stored_offset(info) == 0
    assert store.describe(info)["Type"] == store.storage_type


async def test_8_kb_of_binary_metadata_comes_back_from_the_info_copy(
    medium: Medium, store: DataStore
) -> None:
    """The `.info` keeps only the header (issue 14, finding 6); the decoded form is derived."""
    header = heavy_metadata(random.Random(3))
    info = UploadInfo(id=new_upload_id(), length=1000, metadata_header=header)
    await store.create(info)
    loaded = await (await medium.open()).load_info(info.id)
    assert loaded == info
    assert loaded.metadata_header == header and loaded.metadata["filename"] == "a-file-name.bin"


async def test_load_info_returns_a_copy(store: DataStore) -> None:
    info = new_info(1000)
    await store.create(info)
    loaded = await store.load_info(info.id)
    assert loaded is not None and loaded is not info
    loaded.offset, loaded.metadata["filename"] = 10, "changed"
    assert await store.load_info(info.id) == info


async def test_info_is_rebuilt_with_its_offset_after_save_progress(
    medium: Medium, store: DataStore
) -> None:
    size = 2 * medium.unit
    info = new_info(size)
    await store.create(info)
    await write(store, info, payload(size)[: medium.unit + 100])
    info.expires_at = time.time() + 3600
    await store.save_progress(info)
    fresh = await medium.open()
    assert await fresh.load_info(info.id) == info
    assert await fresh.stored_offset(info) == medium.unit + 100


async def test_terminate_removes_everything_and_may_run_again(
    medium: Medium, store: DataStore
) -> None:
    info = new_info(2 * medium.unit)
    await store.create(info)
    await write(store, info, payload(medium.unit + 100))
    await store.terminate(info)
    assert await store.load_info(info.id) is None
    assert await (await medium.open()).load_info(info.id) is None
    assert [i async for i in store.list_upload_ids()] == []
    await store.terminate(info)  # already gone: succeeds


async def test_list_upload_ids_yields_uploads_not_terminated(store: DataStore) -> None:
    finished = await uploaded(store, payload(1000))
    unfinished, terminated, empty = new_info(1000), new_info(1000), new_info(0)
    for info in (unfinished, terminated, empty):
        await store.create(info)
    await write(store, unfinished, payload(10))
    await store.finish(empty)
    await store.terminate(terminated)
    listed = [upload_id async for upload_id in store.list_upload_ids()]
    assert sorted(listed) == sorted([finished.id, unfinished.id, empty.id])


async def test_the_sweep_is_shown_every_unfinished_upload(medium: Medium, store: DataStore) -> None:
    finished = await uploaded(store, payload(1000))
    going, untouched, deferred = new_info(1000), new_info(1000), new_info(None)
    empty, ended = new_info(0), new_info(1000)
    for info in (going, untouched, deferred, empty, ended):
        await store.create(info)
    await write(store, going, payload(10))
    await store.finish(empty)
    await store.terminate(ended)
    expected = sorted([going.id, untouched.id, deferred.id])
    other = await medium.open()  # another instance, or after a restart
    for lister in (store, other):
        if isinstance(lister, UnfinishedLister):  # finished uploads are not even listed
            assert sorted([i async for i in lister.list_unfinished_ids()]) == expected
        else:  # the sweep walks every upload
            listed = [i async for i in lister.list_upload_ids()]
            assert sorted(listed) == sorted([*expected, finished.id, empty.id])


async def test_retention_is_shown_uploads_finished_before_the_cutoff(
    medium: Medium, store: DataStore
) -> None:
    if not isinstance(store, FinishedRetainer):  # refused at start-up; a lifecycle rule does it
        assert store.storage_type in ("s3store", "azurestore")
        return
    before = time.time()
    finished, empty, going = await uploaded(store, payload(10)), new_info(0), new_info(10)
    for info in (empty, going):
        await store.create(info)
    await store.finish(empty)
    after = time.time() + 0.01
    other = await medium.open()
    assert isinstance(other, FinishedRetainer)
    for retainer in (store, other):
        assert [i async for i in retainer.list_finished_before(before - 1)] == []
        listed = [i async for i in retainer.list_finished_before(after)]
        assert sorted(listed) == sorted([finished.id, empty.id])
        when = await retainer.finished_at(finished.id)
        assert when is not None and before - 0.01 <= when <= after
        assert await retainer.finished_at(going.id) is None
    await store.terminate(finished)
    assert [i async for i in other.list_finished_before(after)] == [empty.id]


async def test_zero_length_upload(medium: Medium, store: DataStore) -> None:
    info = new_info(0)
    await store.create(info)
    assert await store.stored_offset(info) == 0
    await store.finish(info)
    await store.finish(info)
    assert await stored_bytes(store, info) == b""
    assert await (await medium.open()).load_info(info.id) == info


async def test_capabilities_are_what_the_store_implements(medium: Medium, store: DataStore) -> None:
    assert capabilities(store) == medium.capabilities
