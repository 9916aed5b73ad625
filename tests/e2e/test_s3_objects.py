"""The S3 object as the application wants it: encryption, storage class, headers and metadata
set at creation reach the completed object (moto's head_object shows them), and the provider
limits (`--s3-max-parts`) shape the parts and refuse what cannot fit."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.s3_client import new_bucket, s3_client
from tests.support.servers import S3Server
from tests.support.source_files import MakeFile
from tests.support.store_servers import upload_id
from tests.support.tus_js_client import upload_with_js
from tests.support.tus_requests import TUS, download_sha256
from tests.support.tusd_process import StartTusd

MiB = 1024 * 1024

pytestmark = pytest.mark.e2e


def s3_args(s3: S3Server, bucket: str, *extra: str) -> tuple[str, ...]:
    return ("--s3-bucket", bucket, "--s3-endpoint", s3.endpoint, *extra)


def test_encryption_storage_class_and_headers_reach_the_object(
    tusd_factory: StartTusd, s3: S3Server, make_file: MakeFile
) -> None:
    bucket = new_bucket(s3, "obj-")
    server = tusd_factory(
        *s3_args(s3, bucket, "--s3-sse", "AES256", "--s3-storage-class", "STANDARD_IA")
    )
    source = make_file(6 * MiB + 17)
    metadata = {"filename": "Bericht für 2026 %.pdf", "filetype": "application/pdf", "k": " x "}
    result = upload_with_js(server.endpoint, source, metadata=metadata, chunkSize=4 * MiB)
    url = result["url"]
    assert download_sha256(url) == (source.size, source.sha256)

    client = s3_client(s3)
    head = client.head_object(Bucket=bucket, Key=upload_id(url))
    assert head["ContentLength"] == source.size
    assert head["ServerSideEncryption"] == "AES256"
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ContentType"] == "application/pdf"
    assert head["ContentDisposition"] == (
        'inline; filename="Bericht f_r 2026 %.pdf"; '
        "filename*=UTF-8''Bericht%20f%C3%BCr%202026%20%25.pdf"
    )
    assert head["Metadata"] == {
        "tus-upload-id": upload_id(url),
        "filename": "Bericht f%C3%BCr 2026 %25.pdf",
        "filetype": "application/pdf",
        "k": "%20x%20",
    }
    info = client.get_object(Bucket=bucket, Key=upload_id(url) + ".info")
    assert info["ServerSideEncryption"] == "AES256"
    assert info["StorageClass"] == "STANDARD_IA"
    stored = json.loads(info["Body"].read())  # written again on completion
    assert stored["completed"] and stored["offset"] == source.size
    assert stored["storage"]["key"] == upload_id(url)
    assert stored["completed_at"] >= stored["created_at"]


def test_kms_encryption_reaches_the_object_and_its_segments(
    tusd_factory: StartTusd, s3: S3Server
) -> None:
    """A PATCH that ends inside a part leaves a segment object: it is encrypted too."""
    bucket = new_bucket(s3, "kms-")
    server = tusd_factory(
        *s3_args(s3, bucket, "--s3-sse", "aws:kms", "--s3-sse-kms-key-id", "alias/uploads")
    )
    created = httpx.post(server.endpoint, headers={**TUS, "Upload-Length": str(6 * MiB)})
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    key = upload_id(url)
    patched = httpx.patch(
        url,
        content=b"a" * MiB,
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert patched.status_code == 204, patched.text
    client = s3_client(s3)
    segments = client.list_objects_v2(Bucket=bucket, Prefix=key + ".part.")["Contents"]
    assert segments
    for item in segments:
        head = client.head_object(Bucket=bucket, Key=item["Key"])
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"].endswith("alias/uploads")
    uploads = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [u["Key"] for u in uploads] == [key]


def test_max_parts_grows_the_part_size(
    tusd_factory: StartTusd, s3: S3Server, make_file: MakeFile
) -> None:
    bucket = new_bucket(s3, "parts-")
    server = tusd_factory(
        *s3_args(s3, bucket, "--s3-max-parts", "20", "--s3-min-part-size", "5MiB",
                 "--s3-part-size", "5MiB")
    )  # fmt: skip
    source = make_file(150 * MiB)
    result = upload_with_js(server.endpoint, source)
    url = result["url"]
    assert download_sha256(url) == (source.size, source.sha256)
    head = s3_client(s3).head_object(Bucket=bucket, Key=upload_id(url))
    # A multipart object's ETag ends in "-<number of parts>".
    parts = int(head["ETag"].strip('"').rsplit("-", 1)[1])
    assert parts <= 20


def test_a_length_beyond_max_parts_is_413(tusd_factory: StartTusd, s3: S3Server) -> None:
    bucket = new_bucket(s3, "parts-")
    server = tusd_factory(*s3_args(s3, bucket, "--s3-max-parts", "20"))
    too_long = 20 * 5 * 1024**3 + 1
    refused = httpx.post(server.endpoint, headers={**TUS, "Upload-Length": str(too_long)})
    assert refused.status_code == 413, refused.text
    assert "20 parts" in refused.text and "--s3-max-parts" in refused.text
    assert "Contents" not in s3_client(s3).list_objects_v2(Bucket=bucket)
    assert not s3_client(s3).list_multipart_uploads(Bucket=bucket).get("Uploads")
    # Within the limit, the same server takes it.
    fits = httpx.post(server.endpoint, headers={**TUS, "Upload-Length": str(too_long - 1)})
    assert fits.status_code == 201, fits.text
