"""Many parts and the part limits, driving S3Store directly against a moto server of its own
that accepts small parts (moto's `S3_UPLOAD_PART_MIN_SIZE`), so an upload of 1,200 parts is a
few MiB: ListParts pages beyond its 1,000 parts a page, for the stored offset and for the
completion; and the configured part count refuses what cannot fit."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import pytest

from tests.support.payloads import chunked, payload
from tests.support.s3_client import new_bucket, s3_client
from tests.support.servers import S3Server, s3_server
from tusd_py.errors import TusError
from tusd_py.info import UploadInfo
from tusd_py.stores.s3 import S3Store

KIB = 1024
SMALL_PART = 8 * KIB


@pytest.fixture(scope="module")
def small_parts_s3(s3: S3Server) -> Iterator[S3Server]:
    """Beside the session's server, whose fixture also gives the store its credentials."""
    with s3_server({"S3_UPLOAD_PART_MIN_SIZE": str(SMALL_PART)}) as server:
        yield server


async def test_1200_parts_page_through_list_parts(small_parts_s3: S3Server) -> None:
    bucket = new_bucket(small_parts_s3, "many-")
    store = S3Store(
        bucket, endpoint=small_parts_s3.endpoint, part_size=SMALL_PART, min_part_size=SMALL_PART
    )
    await store.open()
    try:
        data = payload(1200 * SMALL_PART - 100)  # the last part is short
        info = UploadInfo(id=uuid.uuid4().hex, length=len(data))
        await store.create(info)
        assert info.storage["part_size"] == SMALL_PART

        async def commit(offset: int) -> None:
            info.offset = offset

        half = 700 * SMALL_PART + 5
        # The store leaves the commit of a tail to its caller: `info.offset = end` is that commit.
        info.offset = await store.write(info, chunked(data[:half], 64 * KIB), commit)
        assert info.offset == half
        info.offset = await store.write(info, chunked(data[half:-1], 64 * KIB), commit)
        before = store.request_counts["list_parts"]
        # Rebuilt from S3: 1,199 parts over two ListParts pages, and the last part's tail.
        assert await store.stored_offset(info) == len(data) - 1
        assert store.request_counts["list_parts"] - before == 2
        info.offset = await store.write(info, chunked(data[-1:], 1), commit)
        assert info.finished
        await store.finish(info)

        client = s3_client(small_parts_s3)
        head = client.head_object(Bucket=bucket, Key=info.id)
        assert head["ETag"].strip('"').endswith("-1200")
        body = client.get_object(Bucket=bucket, Key=info.id)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        await store.close()


async def test_max_parts_grows_parts_and_refuses_what_cannot_fit(
    small_parts_s3: S3Server,
) -> None:
    bucket = new_bucket(small_parts_s3, "few-")
    store = S3Store(
        bucket,
        endpoint=small_parts_s3.endpoint,
        part_size=SMALL_PART,
        min_part_size=SMALL_PART,
        max_parts=10,
    )
    await store.open()
    try:
        data = payload(10 * SMALL_PART * 3)  # would be 30 parts of the configured size
        info = UploadInfo(id=uuid.uuid4().hex, length=len(data))
        await store.create(info)
        assert info.storage["part_size"] >= 3 * SMALL_PART
        assert info.storage["max_parts"] == 10

        async def commit(offset: int) -> None:
            info.offset = offset

        await store.write(info, chunked(data, 64 * KIB), commit)
        await store.finish(info)
        head = s3_client(small_parts_s3).head_object(Bucket=bucket, Key=info.id)
        assert int(head["ETag"].strip('"').rsplit("-", 1)[1]) <= 10

        with pytest.raises(TusError) as refused:
            await store.create(UploadInfo(id=uuid.uuid4().hex, length=10 * 5 * 1024**3 + 1))
        assert refused.value.status == 413
        deferred = UploadInfo(id=uuid.uuid4().hex, length=None)
        await store.create(deferred)
        deferred.length = 10 * deferred.storage["part_size"] + 1
        with pytest.raises(TusError) as late:
            await store.declare_length(deferred)
        assert late.value.status == 413 and "--s3-max-parts" in str(late.value)
    finally:
        await store.close()
