"""The tests' own S3 client, to prepare and look into buckets on moto's server.

One botocore client per endpoint for the whole run (building one loads the S3 service model,
~0.1 s), with the fake credentials the session's moto server accepts. Each helper takes the
`S3Server` or its endpoint URL.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import botocore.session

from tests.support.servers import S3_ENV, S3Server


def s3_client(s3: S3Server | str, ca_bundle: str | None = None) -> Any:
    """A synchronous botocore S3 client (the same API as boto3's); over HTTPS it trusts the
    server's test CA (`ca_bundle` when `s3` is only an endpoint URL)."""
    if isinstance(s3, str):
        return _client(s3, ca_bundle)
    return _client(s3.endpoint, s3.ca_bundle)


@functools.cache
def _client(endpoint: str, ca_bundle: str | None) -> Any:
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        verify=ca_bundle,
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def new_bucket(s3: S3Server | str, prefix: str = "t") -> str:
    """Create an empty bucket with a name of its own; return the name."""
    bucket = f"{prefix}{uuid.uuid4().hex[:20]}"
    s3_client(s3).create_bucket(Bucket=bucket)
    return bucket


def bucket_keys(s3: S3Server | str, bucket: str) -> list[str]:
    """The keys of every object in `bucket`, sorted."""
    listing = s3_client(s3).list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))
