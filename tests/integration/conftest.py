"""Fixtures of the integration tests beside the session's servers (tests/conftest.py)."""

from __future__ import annotations

import uuid

import botocore.session
import pytest

from tests.servers import S3Server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    """A new, empty bucket on the session's moto server."""
    name = f"tusd-{uuid.uuid4().hex[:20]}"
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=s3.endpoint, region_name="us-east-1"
    )
    client.create_bucket(Bucket=name)
    return name
