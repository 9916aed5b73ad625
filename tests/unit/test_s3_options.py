"""The S3 transport and download options (issue 17): their refusals and what they choose."""

from __future__ import annotations

from pathlib import Path

import pytest

from tusd_py.config import Config
from tusd_py.stores.s3.client import addressing
from tusd_py.validation import ConfigError


@pytest.mark.parametrize(
    ("style", "endpoint", "chosen"),
    [
        ("auto", None, "virtual"),
        ("auto", "https://minio.example.test", "path"),
        ("path", None, "path"),
        ("virtual", "https://r2.example.test", "virtual"),
    ],
)
def test_auto_addressing_is_virtual_on_aws_and_path_with_an_endpoint(
    style: str, endpoint: str | None, chosen: str
) -> None:
    assert addressing(style, endpoint) == chosen  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"s3_ca_bundle": "/nonexistent/ca.pem"}, "is not a file (--s3-ca-bundle / TUSD_S3_CA"),
        ({"s3_download_expiry": 0.5}, "7 days (SigV4's limit) (--s3-download-expiry"),
        ({"s3_download_expiry": 8 * 24 * 3600}, "between 1 s and 7 days"),
    ],
)
def test_bad_values_name_their_option(options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Config(s3_bucket="b", **options)  # type: ignore[arg-type]
    assert says in str(refused.value)


@pytest.mark.parametrize(
    "options",
    [{"s3_download": "redirect"}, {"s3_addressing_style": "path"}, {"s3_ca_bundle": __file__}],
)
def test_the_options_need_an_s3_bucket(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="is set but --s3-bucket is not"):
        Config(**options)  # type: ignore[arg-type]


def test_the_options_with_a_bucket_are_accepted(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    Config(
        s3_bucket="b",
        s3_ca_bundle=str(bundle),
        s3_addressing_style="virtual",
        s3_download="redirect",
        s3_download_expiry=60,
    )
