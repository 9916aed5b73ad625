"""S3's own checksums (`--s3-checksum sha256`, issue 17) against moto's server and real Redis.

What moto 5.2 does with them, read in its source (moto/s3/responses.py, models.py): it records
the algorithm of CreateMultipartUpload and, at CompleteMultipartUpload, computes the completed
object's COMPOSITE checksum itself from the parts' bytes; HeadObject and GetObjectAttributes
with ChecksumMode report it. It does not verify the `x-amz-checksum-sha256` of an UploadPart or
a PutObject (a TODO in `_get_checksum`: the value is echoed, never compared), ListParts reports
no part checksums, and CompleteMultipartUpload's part checksums are not compared. So a corrupted
part checksum is not refused by moto, and these tests check instead what the store sends: every
part and segment carries the SHA-256 of exactly its bytes, and the object's checksum is the one
S3 computes from the parts the store cut.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.support.payloads import chunked, payload, sha256
from tests.support.s3_client import new_bucket, s3_client
from tests.support.servers import S3_ENV, RedisServer, S3Server, unique_prefix
from tests.support.tus_requests import TUS, download_sha256, head
from tests.support.tusd_process import TusdProcess
from tusd_py.info import UploadInfo
from tusd_py.stores.s3 import MIB, S3Store

PART = 5 * MIB


def composite_sha256(data: bytes, part_size: int) -> str:
    """S3's checksum of a multipart object: SHA-256 of the parts' SHA-256s, then `-<parts>`."""
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    digests = b"".join(hashlib.sha256(part).digest() for part in parts)
    return f"{base64.b64encode(hashlib.sha256(digests).digest()).decode()}-{len(parts)}"


def object_checksum(s3: S3Server, bucket: str, key: str) -> str | None:
    """The object's SHA-256 checksum as GetObject reports it (moto's HeadObject leaves out the
    `-<parts>` that AWS adds to both)."""
    response = s3_client(s3).get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    response["Body"].close()
    value = response.get("ChecksumSHA256")
    return None if value is None else str(value)


def server(
    tmp_path: Path, s3: S3Server, redis: RedisServer, bucket: str, *extra: str, prefix: str = ""
) -> Any:
    args = (
        "--s3-bucket", bucket, "--s3-endpoint", s3.endpoint,
        "--s3-region", S3_ENV["AWS_DEFAULT_REGION"], "--s3-part-size", "5MiB",
        "--redis-url", redis.url, "--redis-prefix", prefix or unique_prefix(), *extra,
    )  # fmt: skip
    return TusdProcess(tmp_path / "uploads", args)


def create(endpoint: str, length: int) -> str:
    created = httpx.post(endpoint, headers={**TUS, "Upload-Length": str(length)}, timeout=30)
    assert created.status_code == 201, created.text
    return str(created.headers["Location"])


def send(url: str, offset: int, data: bytes) -> None:
    headers = {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    patched = httpx.patch(url, content=data, headers=headers, timeout=60)
    assert patched.status_code == 204, patched.text
    assert patched.headers["Upload-Offset"] == str(offset + len(data))


def send_in_patches(url: str, data: bytes, start: int, end: int, size: int) -> None:
    for offset in range(start, end, size):
        send(url, offset, data[offset : min(offset + size, end)])


def test_the_object_carries_its_checksum_after_several_patches(
    s3: S3Server, redis: RedisServer, tmp_path: Path
) -> None:
    bucket = new_bucket(s3)
    data = payload(2 * PART + 3 * MIB + 11)
    tusd = server(tmp_path, s3, redis, bucket, "--s3-checksum", "sha256")
    try:
        url = create(tusd.endpoint, len(data))
        send_in_patches(url, data, 0, len(data), 3 * MIB)  # parts filled across PATCHes
        assert download_sha256(url) == (len(data), sha256(data))
    finally:
        tusd.stop()
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]
    assert object_checksum(s3, bucket, upload_id) == composite_sha256(data, PART)
    attributes = s3_client(s3).get_object_attributes(
        Bucket=bucket, Key=upload_id, ObjectAttributes=["Checksum", "ObjectSize"]
    )
    assert attributes["ObjectSize"] == len(data)
    assert attributes["Checksum"]["ChecksumType"] == "COMPOSITE"
    info = s3_client(s3).head_object(Bucket=bucket, Key=f"{upload_id}.info", ChecksumMode="ENABLED")
    assert info.get("ChecksumSHA256"), "the .info carries its checksum too"
    assert "Traceback" not in tusd.output, tusd.output


def test_a_resumed_upload_on_a_new_server_completes_with_its_checksum(
    s3: S3Server, redis: RedisServer, tmp_path: Path
) -> None:
    """The second server knows the first one's parts only from ListParts and Redis."""
    bucket = new_bucket(s3)
    data = payload(3 * PART + 5)
    prefix = unique_prefix()
    args = ("--s3-checksum", "sha256")
    first = server(tmp_path, s3, redis, bucket, *args, prefix=prefix)
    try:
        url = create(first.endpoint, len(data))
        path = url[len(first.endpoint) :]
        send_in_patches(url, data, 0, PART + 2 * MIB, 2 * MIB)  # ends inside part 2
    finally:
        first.stop()
    second = server(tmp_path, s3, redis, bucket, *args, prefix=prefix)
    try:
        url = second.endpoint + path
        offset = int(head(url).headers["Upload-Offset"])
        assert offset == PART + 2 * MIB
        send_in_patches(url, data, offset, len(data), 4 * MIB)
        assert download_sha256(url) == (len(data), sha256(data))
    finally:
        second.stop()
    assert object_checksum(s3, bucket, path.strip("/")) == composite_sha256(data, PART)
    assert "Traceback" not in first.output + second.output


@pytest.mark.parametrize(("before", "after"), [("off", "sha256"), ("sha256", "off")])
def test_an_upload_keeps_the_checksum_choice_it_was_created_with(
    s3: S3Server, redis: RedisServer, tmp_path: Path, before: str, after: str
) -> None:
    """S3 refuses parts whose checksum does not match how their multipart upload was created
    (AWS: a part without one for an upload with SHA256, or one with it for an upload without),
    so `info.storage["checksum"]` fixes the choice per upload, like the part size."""
    bucket, prefix = new_bucket(s3), unique_prefix()
    data = payload(2 * PART + 1)
    first = server(tmp_path, s3, redis, bucket, "--s3-checksum", before, prefix=prefix)
    try:
        url = create(first.endpoint, len(data))
        path = url[len(first.endpoint) :]
        send(url, 0, data[: PART + MIB])
    finally:
        first.stop()
    second = server(tmp_path, s3, redis, bucket, "--s3-checksum", after, prefix=prefix)
    try:
        open_uploads = s3_client(s3).list_multipart_uploads(Bucket=bucket)["Uploads"]
        assert [u["Key"] for u in open_uploads] == [path.strip("/")]
        send(second.endpoint + path, PART + MIB, data[PART + MIB :])
        assert download_sha256(second.endpoint + path) == (len(data), sha256(data))
    finally:
        second.stop()
    checksum = object_checksum(s3, bucket, path.strip("/"))
    if before == "sha256":
        assert checksum == composite_sha256(data, PART)
    else:
        assert checksum is None


@pytest.mark.parametrize("choice", ["off", "auto"])
def test_without_checksums_the_object_has_none(
    s3: S3Server, redis: RedisServer, tmp_path: Path, choice: str
) -> None:
    """`off`, and `auto` with an S3-compatible endpoint: today's requests, no checksum kept."""
    bucket = new_bucket(s3)
    data = payload(PART + 3)
    tusd = server(tmp_path, s3, redis, bucket, "--s3-checksum", choice)
    try:
        url = create(tusd.endpoint, len(data))
        send(url, 0, data)
        assert download_sha256(url) == (len(data), sha256(data))
    finally:
        tusd.stop()
    assert object_checksum(s3, bucket, url.rstrip("/").rsplit("/", 1)[-1]) is None


# -- what the store sends ----------------------------------------------------------------------


def record_bodies(store: S3Store) -> list[dict[str, Any]]:
    """Headers and SHA-256 of the body of every part and object upload from now on."""
    sent: list[dict[str, Any]] = []

    def record(request: Any, **_: Any) -> None:
        body = request.body
        if hasattr(body, "read"):
            position = body.tell()
            body.seek(0)
            content = body.read()
            body.seek(position)
        else:
            content = bytes(body or b"")
        headers = {
            k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()
        }
        sent.append({"url": request.url, "headers": headers, "sha256": hashlib.sha256(content)})

    for operation in ("UploadPart", "PutObject", "CompleteMultipartUpload"):
        store.client.s3.meta.events.register(f"before-send.s3.{operation}", record)
    return sent


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_every_part_and_segment_carries_the_sha256_of_its_bytes(
    s3: S3Server, s3_tls: S3Server, tls: bool
) -> None:
    """One SHA-256 per body, computed by the store: the flexible checksum S3 verifies and the
    signed payload hash alike, over HTTP and HTTPS; no Content-MD5 on top."""
    endpoint = s3_tls if tls else s3
    bucket = new_bucket(endpoint)
    data = payload(2 * PART + 7)
    store = S3Store(
        bucket,
        endpoint=endpoint.endpoint,
        part_size=PART,
        checksum="sha256",
        ca_bundle=endpoint.ca_bundle,
    )
    await store.open()
    try:
        sent = record_bodies(store)
        info = UploadInfo(id=uuid.uuid4().hex, length=len(data))
        await store.create(info)
        for pos in range(0, len(data), 2 * MIB):  # segments, background parts, the end
            piece = data[pos : pos + 2 * MIB]

            async def commit(offset: int) -> None:
                info.offset = offset

            info.offset = await store.write(info, chunked(piece, 65536), commit)
            if info.finished:
                await store.finish(info)
    finally:
        await store.close()
    uploads = [s for s in sent if "partNumber=" in s["url"] or ".part." in s["url"]]
    assert len([s for s in uploads if "partNumber=" in s["url"]]) == 3
    assert len([s for s in uploads if ".part." in s["url"]]) >= 4
    for item in uploads:
        headers, digest = item["headers"], item["sha256"]
        assert headers["x-amz-checksum-sha256"] == base64.b64encode(digest.digest()).decode()
        assert headers["x-amz-content-sha256"] == digest.hexdigest()
        assert "content-md5" not in headers
    assert object_checksum(endpoint, bucket, info.id) == composite_sha256(data, PART)


async def test_parts_uploaded_by_the_completing_request_are_completed_with_their_checksums(
    s3: S3Server,
) -> None:
    """CompleteMultipartUpload names each part's checksum when the store knows it: from
    UploadPart (here: parts rebuilt from segments at finish()) or else from ListParts, which
    gives them on AWS (moto's ListParts has none, so part 1 goes without)."""
    bucket = new_bucket(s3)
    data = payload(PART + 9)
    store = S3Store(
        bucket, endpoint=s3.endpoint, part_size=PART, checksum="sha256", max_object_size=1024**3
    )
    await store.open()
    try:
        sent = record_bodies(store)
        captured: list[bytes] = []

        def body_of(request: Any, **_: Any) -> None:
            captured.append(bytes(request.body))

        store.client.s3.meta.events.register("before-send.s3.CompleteMultipartUpload", body_of)
        info = UploadInfo(id=uuid.uuid4().hex, length=None)  # deferred: finish() uploads parts
        await store.create(info)

        async def commit(offset: int) -> None:
            info.offset = offset

        info.offset = await store.write(info, chunked(data, 65536), commit)
        info.length = len(data)
        await store.declare_length(info)
        await store.finish(info)
    finally:
        await store.close()
    assert [s for s in sent if "partNumber=" in s["url"]], sent
    assert len(captured) == 1
    body = captured[0].decode()
    assert body.count("<ChecksumSHA256>") == 1, body  # part 1's came from ListParts: none
    assert base64.b64encode(hashlib.sha256(data[PART:]).digest()).decode() in body


def test_auto_is_on_for_aws_and_off_with_an_endpoint() -> None:
    assert S3Store("b").client.checksum is True
    assert S3Store("b", endpoint="https://minio.example").client.checksum is False
    assert S3Store("b", endpoint="https://minio.example", checksum="sha256").client.checksum
    assert S3Store("b", checksum="off").client.checksum is False
    assert S3Store("b").client.digest == "checksum-sha256"
    assert S3Store("b", endpoint="http://127.0.0.1:9000").client.digest == "sha256"


@pytest.mark.parametrize(("before", "after"), [("off", "sha256"), ("sha256", "off")])
async def test_parts_are_sent_as_their_upload_was_created(
    s3: S3Server, before: Literal["off", "sha256"], after: Literal["off", "sha256"]
) -> None:
    """A store whose option changed since an upload was created sends that upload's parts as
    the upload was created: with a checksum only when its multipart upload names SHA256."""
    bucket = new_bucket(s3)
    data = payload(PART + 5)
    info = UploadInfo(id=uuid.uuid4().hex, length=len(data))

    async def commit(offset: int) -> None:
        info.offset = offset

    creator = S3Store(bucket, endpoint=s3.endpoint, part_size=PART, checksum=before)
    await creator.open()
    try:
        await creator.create(info)
    finally:
        await creator.close()
    store = S3Store(bucket, endpoint=s3.endpoint, part_size=PART, checksum=after)
    await store.open()
    try:
        sent = record_bodies(store)
        info.offset = await store.write(info, chunked(data, 65536), commit)
        await store.finish(info)
    finally:
        await store.close()
    parts = [item["headers"] for item in sent if "partNumber=" in item["url"]]
    assert len(parts) == 2
    assert all(("x-amz-checksum-sha256" in headers) == (before == "sha256") for headers in parts)
