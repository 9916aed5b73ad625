"""S3Store against moto's S3 server over real HTTP (fixture `s3`), one bucket per test.

moto enforces S3's multipart rules (every part but the last >= 5 MiB), so a wrong split fails the
completion. The tests drive the store directly, the way the protocol layer does: `write()` with a
commit callback standing in for the state store, then `finish()` once the last byte is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tests.support.fault_proxy import FAULTS, STALL, FaultProxy, Request, every_nth, random_faults
from tests.support.payloads import chunked, payload, sha256
from tests.support.s3_client import bucket_keys, new_bucket, s3_client
from tests.support.servers import S3Server
from tusd_py.errors import TusError, lock_lost
from tusd_py.info import UploadInfo
from tusd_py.stores.s3 import (
    MAX_OBJECT_SIZE,
    MAX_PARTS,
    MIB,
    MIN_PART_SIZE,
    S3Store,
    choose_part_size,
)

PART = 5 * MIB


# -- helpers ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def opened(s3: S3Server | str, bucket: str, **options: Any) -> AsyncIterator[S3Store]:
    endpoint = s3 if isinstance(s3, str) else s3.endpoint
    store = S3Store(bucket, endpoint=endpoint, part_size=PART, **options)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def failing_after(data: bytes, chunk: int, exc: BaseException) -> AsyncIterator[bytes]:
    async for piece in chunked(data, chunk):
        yield piece
    raise exc


class FakeState:
    """Stands in for the state store: records commits, moves info.offset, can lose the lock."""

    def __init__(self, info: UploadInfo, store: S3Store | None = None) -> None:
        self.info = info
        self.store = store
        self.commits: list[int] = []
        self.lose_lock_after: int | None = None  # commits allowed before the lock is "lost"
        self.max_buffered = 0

    async def commit(self, offset: int) -> None:
        if self.lose_lock_after is not None and len(self.commits) >= self.lose_lock_after:
            raise lock_lost(self.info.id)
        assert offset > self.info.offset, "commits only move forward"
        if self.store is not None:
            self.max_buffered = max(self.max_buffered, self.store.buffered_bytes)
        self.commits.append(offset)
        self.info.offset = offset


async def patch(store: S3Store, info: UploadInfo, data: bytes, chunk: int | Iterable[int]) -> int:
    """One PATCH of `data` at info.offset, finishing the upload when it is complete."""
    state = FakeState(info, store)
    end = await store.write(info, chunked(data, chunk), state.commit)
    if end > info.offset:
        await state.commit(end)  # what the store leaves to its caller (stores/base.py)
    assert end == info.offset
    if info.finished:
        await store.finish(info)
    return end


def object_bytes(s3: S3Server, bucket: str, key: str) -> bytes:
    return bytes(s3_client(s3).get_object(Bucket=bucket, Key=key)["Body"].read())


def open_multipart_uploads(s3: S3Server, bucket: str) -> list[str]:
    uploads = s3_client(s3).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [u["Key"] for u in uploads]


def open_spill_files(directory: Any) -> list[str]:
    """Spill files are unlinked at once; an open one still shows in /proc/self/fd."""
    targets = (os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd"))
    with contextlib.suppress(FileNotFoundError):
        return [t for t in targets if t.startswith(str(directory))]
    return []


def delta(store: S3Store, before: Counter[str]) -> dict[str, int]:
    return {k: v - before[k] for k, v in store.request_counts.items() if v != before[k]}


async def new_upload(
    store: S3Store, length: int | None, upload_id: str | None = None
) -> UploadInfo:
    info = UploadInfo(id=upload_id or uuid.uuid4().hex, length=length)
    await store.create(info)
    return info


# -- part size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "configured", "max_size", "expected"),
    [
        (0, 8 * MIB, None, 8 * MIB),
        (10 * MIB, 8 * MIB, None, 8 * MIB),
        (10 * MIB, 1 * MIB, None, MIN_PART_SIZE),  # S3's minimum wins
        (80 * 1024 * MIB, 8 * MIB, None, 9 * MIB),  # 80 GiB / 10,000 parts > 8 MiB
        (MAX_OBJECT_SIZE, 8 * MIB, None, 525 * MIB),
        (None, 8 * MIB, None, 525 * MIB),  # deferred: room for a 5 TiB object
        (None, 8 * MIB, 10 * 1024**3, 8 * MIB),  # deferred, but Tus-Max-Size is 10 GiB
        (None, 8 * MIB, 1024**4, 105 * MIB),
    ],
)
def test_part_size_fits_the_length_in_10000_parts(
    length: int | None, configured: int, max_size: int | None, expected: int
) -> None:
    size = choose_part_size(length, configured, max_size)
    assert size == expected
    assert size % MIB == 0
    target = length if length is not None else min(max_size or MAX_OBJECT_SIZE, MAX_OBJECT_SIZE)
    assert size * MAX_PARTS >= target


async def test_create_records_the_grown_part_size(s3: S3Server, bucket: str) -> None:
    async with opened(s3, bucket) as store:
        huge = await new_upload(store, 3 * 1024**4)  # 3 TiB declared: no byte is sent
        assert huge.storage["part_size"] == 315 * MIB
        deferred = await new_upload(store, None)
        assert deferred.storage["part_size"] * MAX_PARTS >= MAX_OBJECT_SIZE
        loaded = await store.load_info(huge.id)
        assert loaded is not None and loaded.storage == huge.storage
        with pytest.raises(TusError) as err:
            await new_upload(store, MAX_OBJECT_SIZE + 1)
        assert err.value.status == 413


# -- splitting ------------------------------------------------------------------------------


# No shrinking: every example is seconds of moto.
@settings(max_examples=5, deadline=None, derandomize=True, phases=[Phase.generate])
@given(
    chunks=st.lists(
        st.sampled_from([1, 4096, 65536, MIB - 1, 3 * MIB + 7, PART - 1, PART, PART + 1]),
        min_size=1,
        max_size=10,
    ),
    cuts=st.lists(st.booleans(), min_size=10, max_size=10),
)
def test_any_chunking_and_patching_yields_the_same_object(
    s3: S3Server, chunks: list[int], cuts: list[bool]
) -> None:
    """Arbitrary chunk sizes, PATCHes ending anywhere: the object is the bytes sent, in order."""
    data = payload(sum(chunks), seed=len(chunks))
    name = new_bucket(s3, "tusd-")

    async def run() -> None:
        async with opened(s3, name) as store:
            info = await new_upload(store, len(data))
            # Group the chunks into PATCHes: a True cut ends the PATCH after that chunk.
            pos, group = 0, []
            for i, size in enumerate(chunks):
                group.append(size)
                if cuts[i] or i == len(chunks) - 1:
                    n = sum(group)
                    await patch(store, info, data[pos : pos + n], group)
                    pos, group = pos + n, []
            assert info.finished
            assert sha256(object_bytes(s3, name, info.id)) == sha256(data)
            assert bucket_keys(s3, name) == [info.id, f"{info.id}.info"]

    asyncio.run(run())


async def test_1mib_patches_go_through_the_incomplete_part(s3: S3Server, bucket: str) -> None:
    """tus clients with chunkSize 1 MiB: almost every PATCH ends inside a part."""
    data = payload(12 * MIB + 100)
    async with opened(s3, bucket) as a, opened(s3, bucket) as b:
        info = await new_upload(a, len(data))
        costs = []
        for i, pos in enumerate(range(0, len(data), MIB)):
            # Alternate two "instances": b never saw a's tails, so it reads the segments back.
            store = a if i % 4 < 2 else b
            before = Counter(store.request_counts)
            await patch(store, info, data[pos : pos + MIB], 64 * 1024)
            await store.parts.settle(info.id)  # count a background part upload with its PATCH
            costs.append(delta(store, before))
        print("S3 requests per 1 MiB PATCH:", costs)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)
    # PATCH 2 (a, cached head): only its own bytes as a new segment. PATCH 3 (b, no cache): list
    # part 1's segments and read them back first.
    assert costs[1] == {"put_object": 1}
    assert costs[2] == {"list_objects_v2": 1, "get_object": 2, "put_object": 1}
    # PATCH 5 fills part 1 exactly (a, whose cache b made stale): the head is read back, the
    # PATCH's own bytes become a segment, and part 1's upload goes on in the background.
    assert costs[4] == {"list_objects_v2": 1, "get_object": 4, "put_object": 1, "upload_part": 1}
    # The last PATCH (a, after b): read the head back, upload it with the new bytes as the final
    # short part, then ListParts + Complete, and delete every segment (one list, one delete).
    assert costs[-1] == {
        "list_objects_v2": 2,
        "get_object": 2,
        "upload_part": 1,
        "list_parts": 1,
        "complete_multipart_upload": 1,
        "delete_objects": 1,
    }
    assert bucket_keys(s3, bucket) == [info.id, f"{info.id}.info"]


async def test_content_md5_where_the_body_is_not_signed(s3: S3Server, bucket: str) -> None:
    """Over HTTPS (and AWS by default) every body carries a Content-MD5; over plain HTTP botocore
    signs its SHA-256, so the MD5 is left out. Forced on here: every segment and part has one."""
    assert S3Store(bucket, endpoint="http://127.0.0.1:9000").client.content_md5 is False
    assert S3Store(bucket, endpoint="https://s3.example.com").client.content_md5 is True
    assert S3Store(bucket).client.content_md5 is True
    data = payload(2 * PART + 7)
    sent: list[str | None] = []

    def record(request: Any, **_: Any) -> None:
        if request.method == "PUT" and not request.url.endswith(".info"):
            sent.append(request.headers.get("Content-MD5"))

    async with opened(s3, bucket) as store:
        store.client.content_md5 = True
        store.client.s3.meta.events.register("request-created.s3", record)
        info = await new_upload(store, len(data))
        for pos in range(0, len(data), MIB):  # segments, a part filled in the background, the end
            await patch(store, info, data[pos : pos + MIB], 65536)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)
    assert len(sent) >= 10 and all(sent), sent


def record_signed_payloads(store: S3Store) -> list[tuple[str, str, str]]:
    """(url, signed SHA-256, SHA-256 of the body) of every part and object upload from now on."""
    sent: list[tuple[str, str, str]] = []

    def record(request: Any, **_: Any) -> None:
        body = request.body
        position = body.tell()
        body.seek(0)
        actual = hashlib.sha256(body.read()).hexdigest()
        body.seek(position)
        signed = request.headers["X-Amz-Content-SHA256"]
        sent.append((request.url, signed.decode() if isinstance(signed, bytes) else signed, actual))

    store.client.s3.meta.events.register("before-send.s3.UploadPart", record)
    store.client.s3.meta.events.register("before-send.s3.PutObject", record)
    return sent


async def test_signed_payloads_are_hashed_by_the_buffer_not_by_botocore(
    s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over plain HTTP each part and each segment is signed with the SHA-256 the store computed
    in a thread: the header S3 checks matches the bytes sent, and botocore's own hashing of the
    body, on the event loop, never runs for them."""
    botocore_hashed: list[str] = []
    original = S3SigV4Auth.payload

    def hashed_by_botocore(self: Any, request: Any) -> str:
        botocore_hashed.append(request.url)
        return str(original(self, request))

    monkeypatch.setattr(S3SigV4Auth, "payload", hashed_by_botocore)
    data = payload(2 * PART + 7)
    async with opened(s3, bucket) as store:
        sent = record_signed_payloads(store)
        info = await new_upload(store, len(data))
        for pos in range(0, len(data), MIB):  # segments, a part filled in the background, the end
            await patch(store, info, data[pos : pos + MIB], 65536)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)
    assert len([url for url, _, _ in sent if "partNumber=" in url]) == 3, sent
    assert len([url for url, _, _ in sent if ".part." in url]) >= 5, sent
    assert all(signed == actual for _, signed, actual in sent), sent
    assert not [url for url in botocore_hashed if "partNumber=" in url], botocore_hashed
    segment_puts = [url for url in botocore_hashed if ".part." in url and "?" not in url]
    assert not segment_puts, botocore_hashed


async def test_5mib_plus_one_byte_patches(s3: S3Server, bucket: str) -> None:
    data = payload(4 * (PART + 1))
    async with opened(s3, bucket) as store:
        info = await new_upload(store, len(data))
        for pos in range(0, len(data), PART + 1):
            before = Counter(store.request_counts)
            await patch(store, info, data[pos : pos + PART + 1], PART + 1)
            print(f"PATCH at {pos}:", delta(store, before))
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


async def test_single_patch_counts_one_request_per_part(s3: S3Server, bucket: str) -> None:
    data = payload(3 * PART + 123)
    async with opened(s3, bucket) as store:
        info = await new_upload(store, len(data))
        before = Counter(store.request_counts)
        state = FakeState(info, store)
        await store.write(info, chunked(data, 64 * 1024), state.commit)
        assert delta(store, before) == {"upload_part": 4}
        # Acknowledged parts are committed as a contiguous prefix (several at once if they
        # complete out of order), always on part boundaries.
        assert state.commits == sorted(set(state.commits))
        assert state.commits[-1] == len(data)
        assert all(c % PART == 0 for c in state.commits[:-1])
        await store.finish(info)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


@pytest.mark.parametrize("checksum", ["off", "sha256"])
async def test_parts_spill_to_disk_when_the_buffer_budget_is_small(
    s3: S3Server, bucket: str, tmp_path: Any, checksum: str
) -> None:
    """With a checksum the spilled part is hashed from its file descriptor: every byte written
    must be there, not in the file object's buffer (which keeps writes smaller than its 8 KiB)."""
    data = payload(3 * PART + 5)
    options = {"buffer_size": 2 * MIB, "spool_dir": str(tmp_path), "checksum": checksum}
    async with opened(s3, bucket, **options) as store:
        sent = record_signed_payloads(store)
        info = await new_upload(store, len(data))
        state = FakeState(info, store)
        await store.write(info, chunked(data, 5_000), state.commit)
        await store.finish(info)
        assert state.max_buffered <= 2 * MIB
        assert store.buffered_bytes == 0
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)
    parts = [(signed, actual) for url, signed, actual in sent if "partNumber=" in url]
    assert len(parts) == 4 and all(signed == actual for signed, actual in parts), sent
    assert open_spill_files(tmp_path) == []


async def test_spilled_tails_and_read_back_tails(s3: S3Server, bucket: str, tmp_path: Any) -> None:
    """1 MiB PATCHes with a 1.5 MiB budget: tails spill to disk and are not cached."""
    data = payload(PART + 3 * MIB)
    async with opened(s3, bucket, buffer_size=3 * MIB // 2, spool_dir=str(tmp_path)) as store:
        info = await new_upload(store, len(data))
        for pos in range(0, len(data), MIB):
            await patch(store, info, data[pos : pos + MIB], 256 * 1024)
            assert open_spill_files(tmp_path) == []
        assert store.buffered_bytes <= 3 * MIB // 2
        assert store.request_counts["get_object"] >= 3  # spilled tails are read back
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


async def test_many_uploads_share_the_buffer_budget(s3: S3Server, bucket: str) -> None:
    budget = 12 * MIB
    datas = [payload(2 * PART + 1000 * i, seed=i) for i in range(6)]
    async with opened(s3, bucket, buffer_size=budget) as store:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, store.buffered_bytes)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        infos = [await new_upload(store, len(d)) for d in datas]
        await asyncio.gather(
            *(patch(store, i, d, 65536) for i, d in zip(infos, datas, strict=True))
        )
        watcher.cancel()
        assert 0 < peak <= budget
    for info, data in zip(infos, datas, strict=True):
        assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


# -- lengths ----------------------------------------------------------------------------------


async def test_zero_length_upload_is_an_empty_object(s3: S3Server, bucket: str) -> None:
    async with opened(s3, bucket) as store:
        info = await new_upload(store, 0)
        await store.finish(info)
        assert [c async for c in store.read(info, 0, 0)] == []
        assert await store.stored_offset(info) == 0
        # Deferred length that turns out to be 0.
        deferred = await new_upload(store, None)
        deferred.length = 0
        await store.finish(deferred)
    assert object_bytes(s3, bucket, info.id) == b""
    assert object_bytes(s3, bucket, deferred.id) == b""
    assert open_multipart_uploads(s3, bucket) == []


async def test_deferred_length_declared_without_bytes_keeps_the_tail(
    s3: S3Server, bucket: str
) -> None:
    """The last PATCH leaves a tail; the length arrives later in a PATCH with no body."""
    data = payload(PART + 3 * MIB + 17)
    async with opened(s3, bucket) as store:
        info = await new_upload(store, None)
        await patch(store, info, data[: 2 * MIB], 65536)
        await patch(store, info, data[2 * MIB :], 65536)  # ends 3 MiB + 17 into part 2
        assert info.offset == len(data) and not info.finished
        info.length = len(data)  # what the protocol does on `Upload-Length` with an empty body
        await store.finish(info)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)
    assert bucket_keys(s3, bucket) == [info.id, f"{info.id}.info"]


async def test_deferred_length_declared_on_the_last_patch(s3: S3Server, bucket: str) -> None:
    data = payload(2 * PART + MIB)
    async with opened(s3, bucket) as store:
        info = await new_upload(store, None)
        await patch(store, info, data[: PART + 100], 65536)
        info.length = len(data)
        await patch(store, info, data[PART + 100 :], 65536)
        assert info.finished
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


# -- recovery ---------------------------------------------------------------------------------


async def test_stored_offset_is_rebuilt_from_s3(s3: S3Server, bucket: str) -> None:
    data = payload(3 * PART)
    async with opened(s3, bucket) as store:
        info = await new_upload(store, len(data))
        await patch(store, info, data[:MIB], 65536)  # tail in part 1
        await patch(store, info, data[MIB : 2 * PART], 65536)  # ends on a part boundary
        await patch(store, info, data[2 * PART : 2 * PART + 3], 1)  # a 3-byte tail in part 3
    async with opened(s3, bucket) as fresh:  # another instance; state (Redis) was lost
        loaded = await fresh.load_info(info.id)
        assert loaded is not None
        assert await fresh.stored_offset(loaded) == 2 * PART + 3
        loaded.offset = 2 * PART + 3
        await patch(fresh, loaded, data[2 * PART + 3 :], 65536)
        assert await fresh.stored_offset(loaded) == len(data)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


async def test_stored_offset_counts_parts_and_segments_once(s3: S3Server, bucket: str) -> None:
    data = payload(2 * PART)
    async with opened(s3, bucket) as store:
        info = await new_upload(store, len(data) + 1)
        await patch(store, info, data[:MIB], 65536)
        await patch(store, info, data[MIB:], 65536)
        # Part 1's segments stay until the upload finishes; part 1 may still be uploading in
        # the background, and then its segments are what holds it.
        assert f"{info.id}.part.1.0" in bucket_keys(s3, bucket)
        assert await store.stored_offset(info) == 2 * PART
        await store.parts.settle(info.id)
        assert await store.stored_offset(info) == 2 * PART


async def test_terminate_removes_everything(s3: S3Server, bucket: str) -> None:
    async with opened(s3, bucket, prefix="uploads/") as store:
        unfinished = await new_upload(store, 4 * PART)
        await patch(store, unfinished, payload(PART + 10), 65536)
        finished = await new_upload(store, 10)
        await patch(store, finished, b"0123456789", 3)
        kept = await new_upload(store, None)
        assert sorted([i async for i in store.list_upload_ids()]) == sorted(
            [unfinished.id, finished.id, kept.id]
        )
        await store.terminate(unfinished)
        await store.terminate(finished)
        await store.terminate(finished)  # already gone: still fine
        assert [i async for i in store.list_upload_ids()] == [kept.id]
        await store.terminate(kept)
    assert bucket_keys(s3, bucket) == []
    assert open_multipart_uploads(s3, bucket) == []


async def test_list_unfinished_ids_lists_open_multipart_uploads_only(
    s3: S3Server, bucket: str
) -> None:
    async with opened(s3, bucket, prefix="uploads/") as store:
        going = await new_upload(store, 4 * PART)
        await patch(store, going, payload(PART + 10), 65536)
        deferred = await new_upload(store, None)
        untouched = await new_upload(store, 10)
        finished = await new_upload(store, 10)
        await patch(store, finished, b"0123456789", 3)
        empty = await new_upload(store, 0)
        await store.finish(empty)
        ended = await new_upload(store, 10)
        await store.terminate(ended)
        # Someone else's multipart uploads in the bucket: another prefix, a nested key.
        client = s3_client(s3)
        for key in ("other/abc", "uploads/nested/abc"):
            client.create_multipart_upload(Bucket=bucket, Key=key)
        before = Counter(store.request_counts)
        listed = [i async for i in store.list_unfinished_ids()]
        assert sorted(listed) == sorted([going.id, deferred.id, untouched.id])
        assert store.request_counts - before == Counter({"list_multipart_uploads": 1})


async def test_list_unfinished_ids_pages_through_markers(
    s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto answers every upload in one page; S3 answers 1,000 at most, then markers.
    pages = [
        {"Uploads": [{"Key": "p/a"}, {"Key": "p/b"}], "IsTruncated": True,
         "NextKeyMarker": "p/b", "NextUploadIdMarker": "u2"},
        {"Uploads": [{"Key": "p/b"}, {"Key": "p/c"}], "IsTruncated": False},
    ]  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def call(operation: str, upload_id: str | None, **params: Any) -> Any:
        assert operation == "list_multipart_uploads"
        sent.append(params)
        return pages[len(sent) - 1]

    async with opened(s3, bucket, prefix="p/") as store:
        monkeypatch.setattr(store.client, "call", call)
        assert [i async for i in store.list_unfinished_ids()] == ["a", "b", "c"]
    assert sent == [
        {"Prefix": "p/"},
        {"Prefix": "p/", "KeyMarker": "p/b", "UploadIdMarker": "u2"},
    ]


async def test_list_upload_ids_paginates(s3: S3Server, bucket: str) -> None:
    client = s3_client(s3)
    ids = {f"id{i:04d}" for i in range(1005)}
    for upload_id in ids:  # `.info` objects only: enough for the listing
        client.put_object(Bucket=bucket, Key=f"p/{upload_id}.info", Body=b"{}")
    client.put_object(Bucket=bucket, Key="p/nested/x.info", Body=b"{}")
    async with opened(s3, bucket, prefix="p/") as store:
        assert {i async for i in store.list_upload_ids()} == ids
        assert store.request_counts["list_objects_v2"] == 2


async def test_read_streams_ranges(s3: S3Server, bucket: str) -> None:
    data = payload(PART + 1000)
    async with opened(s3, bucket) as store:
        info = await new_upload(store, len(data))
        await patch(store, info, data, MIB)
        for start, end in [
            (0, len(data)),
            (7, 8),
            (PART - 5, PART + 5),
            (len(data) - 1, len(data)),
        ]:
            assert b"".join([c async for c in store.read(info, start, end)]) == data[start:end]


# -- failures ---------------------------------------------------------------------------------


async def test_failing_body_commits_only_acknowledged_parts(s3: S3Server, bucket: str) -> None:
    data = payload(4 * PART + 77)
    async with opened(s3, bucket) as store:
        info = await new_upload(store, len(data))
        state = FakeState(info, store)
        bad = TusError(460, "checksum-mismatch", "injected")
        with pytest.raises(TusError) as err:
            await store.write(info, failing_after(data[: 2 * PART + MIB], MIB, bad), state.commit)
        assert err.value is bad
        assert info.offset in (0, PART, 2 * PART)  # whole parts only, never the 1 MiB remainder
        assert store.buffered_bytes == 0
        # The client resumes from the committed offset; parts are overwritten where needed.
        await patch(store, info, data[info.offset :], 3 * MIB + 1)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


async def test_failing_body_keeps_the_committed_tail(s3: S3Server, bucket: str) -> None:
    data = payload(2 * PART)
    bad = TusError(460, "checksum-mismatch", "injected")
    async with opened(s3, bucket) as store:
        info = await new_upload(store, len(data))
        await patch(store, info, data[:MIB], 65536)
        for sent in (MIB, 3 * MIB):  # stays in part 1; crosses into part 2
            # A fresh instance (no cached tail) so the retry really reads `.part` back.
            async with opened(s3, bucket) as other:
                state = FakeState(info, other)
                with pytest.raises(TusError):
                    await other.write(
                        info, failing_after(data[MIB : 2 * MIB + sent], MIB, bad), state.commit
                    )
        assert info.offset in (MIB, PART)
    async with opened(s3, bucket) as fresh:
        await patch(fresh, info, data[info.offset :], 65536)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


async def test_lost_lock_stops_commits(s3: S3Server, bucket: str, proxy: FaultProxy) -> None:
    # Parts may be acknowledged in any order; the later ones are held back so that part 1 is
    # committed alone first (otherwise one commit could cover all four, and nothing is lost).
    proxy.stall_seconds = 0.3
    proxy.decide = lambda request: STALL if (request.part_number or 0) > 1 else None
    data = payload(4 * PART)
    async with opened(proxy.endpoint, bucket) as store:
        info = await new_upload(store, len(data))
        state = FakeState(info, store)
        state.lose_lock_after = 1
        with pytest.raises(TusError) as err:
            await store.write(info, chunked(data, 65536), state.commit)
        assert err.value.code == "lock-lost"
        assert len(state.commits) == 1 and state.commits[0] % PART == 0
        assert store.buffered_bytes == 0
        await patch(store, info, data[info.offset :], 65536)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


class VerifiedAtEnd:
    """Like the protocol's checksum guard: commits made while the body streams are only
    remembered and applied once the body is verified (after its last chunk); then the real
    commit fails, as it does when the lock was lost meanwhile."""

    def __init__(self, info: UploadInfo) -> None:
        self.info = info
        self.pending = 0
        self.verified = False
        self.applied: list[int] = []

    async def chunks(self, data: bytes, chunk: int) -> AsyncIterator[bytes]:
        async for piece in chunked(data, chunk):
            yield piece
        await asyncio.sleep(0.5)  # a slow end of body: the parts are acknowledged before it
        self.verified = True

    async def commit(self, offset: int) -> None:
        self.pending = max(self.pending, offset)
        if self.verified:
            raise lock_lost(self.info.id)


async def test_deferred_commit_failing_at_the_end_keeps_the_committed_tail(
    s3: S3Server, bucket: str
) -> None:
    data = payload(3 * PART)
    async with opened(s3, bucket) as store:
        info = await new_upload(store, len(data))
        await patch(store, info, data[:MIB], 65536)  # committed: a 1 MiB tail in part 1
        guard = VerifiedAtEnd(info)
        # Fills part 1 (acknowledged while streaming, commit held back) and leaves a tail in
        # part 2; the commit applied at the end fails.
        with pytest.raises(TusError) as err:
            end = await store.write(
                info, guard.chunks(data[MIB : PART + 2 * MIB], 65536), guard.commit
            )
            await guard.commit(end)  # the tail's commit, which the store leaves to its caller
        assert err.value.code == "lock-lost"
        assert info.offset == MIB
    async with opened(s3, bucket) as fresh:  # the retry reads `.part` back: it must be intact
        await patch(fresh, info, data[MIB:], 65536)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


async def test_finish_is_idempotent(s3: S3Server, bucket: str) -> None:
    data = payload(PART + 5)
    async with opened(s3, bucket) as store:
        info = await new_upload(store, len(data))
        await patch(store, info, data, MIB)
        await store.finish(info)  # a retried finish (e.g. the first answer was lost)
        assert await store.stored_offset(info) == len(data)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


# -- S3 faults through a proxy ----------------------------------------------------------------


@pytest.fixture
async def proxy(s3: S3Server) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", s3.port) as p:
        yield p


@pytest.mark.parametrize("faults", ["random", "cycle"])
async def test_upload_survives_transient_faults(
    s3: S3Server, bucket: str, proxy: FaultProxy, faults: str
) -> None:
    proxy.decide = random_faults(0.3, seed=7) if faults == "random" else every_nth(3)
    data = payload(3 * PART + 2 * MIB + 11)
    async with opened(proxy.endpoint, bucket, max_attempts=8) as store:
        info = await new_upload(store, len(data))
        for start, end in [(0, 2 * MIB), (2 * MIB, 2 * PART + 1), (2 * PART + 1, len(data))]:
            assert info.offset == start
            await patch(store, info, data[start:end], 256 * 1024)
        await store.finish(info)  # again: a lost CompleteMultipartUpload answer is harmless
    print("fault proxy:", dict(proxy.requests), "faults:", dict(proxy.faults))
    assert sum(proxy.faults.values()) >= 5
    if faults == "cycle":
        assert set(proxy.faults) == set(FAULTS)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


async def test_s3_outage_is_a_503_and_the_upload_resumes(
    s3: S3Server, bucket: str, proxy: FaultProxy
) -> None:
    data = payload(4 * PART + 3)

    def outage_after_two_parts(request: Request) -> str | None:
        # By part number: parts are hashed in threads, so part 3 may reach S3 before part 1.
        number = request.part_number
        return "503" if number is not None and number > 2 else None

    proxy.decide = outage_after_two_parts
    async with opened(proxy.endpoint, bucket, max_attempts=2) as store:
        info = await new_upload(store, len(data))
        state = FakeState(info, store)
        with pytest.raises(TusError) as err:
            await store.write(info, chunked(data, MIB), state.commit)
        assert err.value.status == 503
        assert "UploadPart" in err.value.message or "upload_part" in err.value.message
        assert err.value.headers.get("Retry-After")
        # Never beyond what S3 acknowledged; parts 1 and 2 land before the error is answered.
        assert info.offset in (PART, 2 * PART)
        assert info.offset == 2 * PART
        assert store.buffered_bytes == 0
        proxy.decide = lambda request: None  # S3 is back
        await patch(store, info, data[info.offset :], MIB)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


async def test_parts_before_a_failed_part_still_land_and_are_committed(
    s3: S3Server, bucket: str, proxy: FaultProxy
) -> None:
    """Part 1 is slow, part 3 fails at once: the PATCH's error waits for parts 1 and 2, so the
    client resumes after them instead of re-sending 10 MiB that S3 already has."""
    data = payload(3 * PART + 7)
    proxy.stall_seconds = 0.5

    def slow_first_failing_third(request: Request) -> str | None:
        return {1: STALL, 3: "503"}.get(request.part_number or 0)

    proxy.decide = slow_first_failing_third
    async with opened(proxy.endpoint, bucket, max_attempts=1) as store:
        info = await new_upload(store, len(data))
        state = FakeState(info, store)
        with pytest.raises(TusError) as err:
            await store.write(info, chunked(data, MIB), state.commit)
        assert err.value.status == 503
        assert info.offset == 2 * PART
        assert store.buffered_bytes == 0
        proxy.decide = lambda request: None
        await patch(store, info, data[info.offset :], MIB)
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)


async def test_reset_connections_on_every_other_part(
    s3: S3Server, bucket: str, proxy: FaultProxy
) -> None:
    """Parts that S3 stored but whose answer was lost are uploaded again, harmlessly."""
    toggle = [False]

    def every_other(request: Request) -> str | None:
        if request.is_upload_part or request.method == "POST":
            toggle[0] = not toggle[0]
            return "reset-after" if toggle[0] else None
        return None

    proxy.decide = every_other
    data = payload(3 * PART + 1)
    async with opened(proxy.endpoint, bucket, max_attempts=4) as store:
        info = await new_upload(store, len(data))
        await patch(store, info, data, MIB)
    assert proxy.faults["reset-after"] >= 4
    assert sha256(object_bytes(s3, bucket, info.id)) == sha256(data)
