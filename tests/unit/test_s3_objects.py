"""What the S3 store puts on objects, checked without S3: the metadata encoding, the limits and
the configuration refusals (the objects themselves: tests/e2e/test_s3_objects.py)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from tusd_py.config import Config
from tusd_py.errors import TusError
from tusd_py.info import UploadInfo
from tusd_py.stores.s3.limits import MAX_PART_SIZE, MIB, check_fits, choose_part_size
from tusd_py.stores.s3.objects import (
    MAX_USER_METADATA,
    ObjectSettings,
    describe_object,
    user_metadata,
)
from tusd_py.validation import ConfigError


def test_metadata_values_are_ascii_and_read_back() -> None:
    values = {"name": "Grüße, 東京 %41.txt", "plain": "report.pdf", "edge": " x ", "nl": "a\nb"}
    meta = user_metadata(UploadInfo("u1", 1, metadata=values))
    assert meta["tus-upload-id"] == "u1"
    assert meta["plain"] == "report.pdf"
    assert meta["edge"] == "%20x%20"
    for key, value in values.items():
        assert meta[key].isascii() and meta[key].isprintable()
        assert unquote(meta[key]) == value


def test_metadata_keys_are_lower_case_header_names() -> None:
    meta = user_metadata(UploadInfo("u1", 1, metadata={"FileName": "a", "filename": "b", "ä": "c"}))
    assert meta["filename"] == "a"  # sorted: "FileName" first, the other is only in the .info
    assert meta["%C3%A4"] == "c"


def test_metadata_stops_at_s3s_two_kilobytes() -> None:
    values = {f"k{i:02}": "v" * 100 for i in range(40)}
    meta = user_metadata(UploadInfo("u1", 1, metadata=values))
    assert sum(len(k) + len(v) for k, v in meta.items()) <= MAX_USER_METADATA
    assert 10 < len(meta) < 40 and "k00" in meta


def test_the_upload_object_reads_like_a_download() -> None:
    info = UploadInfo("u1", 1, metadata={"name": "a b.png", "type": "image/png"})
    described = describe_object(info)
    assert described["ContentType"] == "image/png"
    assert (
        described["ContentDisposition"]
        == "inline; filename=\"a b.png\"; filename*=UTF-8''a%20b.png"
    )
    hostile = describe_object(UploadInfo("u2", 1, metadata={"filetype": "text/html"}))
    assert hostile["ContentType"] == "text/html"
    assert hostile["ContentDisposition"] == "attachment"


def test_encryption_and_class_parameters() -> None:
    assert ObjectSettings().every_object() == {}
    assert ObjectSettings("aws:kms", "alias/k", "STANDARD_IA").every_object() == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/k",
        "StorageClass": "STANDARD_IA",
    }
    with pytest.raises(ValueError):
        ObjectSettings("AES256", "alias/k")


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"s3_sse_kms_key_id": "alias/k"}, "--s3-sse-kms-key-id / TUSD_S3_SSE_KMS_KEY_ID"),
        ({"s3_max_parts": 0}, "--s3-max-parts / TUSD_S3_MAX_PARTS"),
        ({"s3_max_parts": 10_001}, "--s3-max-parts"),
        ({"s3_min_part_size": MIB}, "--s3-min-part-size / TUSD_S3_MIN_PART_SIZE"),
    ],
)
def test_bad_s3_object_options_are_refused(options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Config(s3_bucket="b", **options)  # type: ignore[arg-type]
    assert says in str(refused.value)


def test_part_size_fits_the_configured_part_count() -> None:
    assert choose_part_size(150 * MIB, 5 * MIB, max_parts=20) == 8 * MIB
    assert choose_part_size(None, 8 * MIB, max_parts=1000) == MAX_PART_SIZE
    assert choose_part_size(10 * MIB, 8 * MIB, min_part_size=16 * MIB) == 16 * MIB
    assert choose_part_size(1000, 1, min_part_size=1024) == 1024  # the test-only floor
    check_fits(20 * MAX_PART_SIZE, MAX_PART_SIZE, 20)
    with pytest.raises(TusError) as refused:
        check_fits(20 * MAX_PART_SIZE + 1, MAX_PART_SIZE, 20)
    assert refused.value.status == 413 and "--s3-max-parts" in str(refused.value)
