"""Fixtures of the integration tests beside the session's servers (tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.support.s3_client import new_bucket
from tests.support.servers import S3Server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    """A new, empty bucket on the session's moto server."""
    return new_bucket(s3, "tusd-")
