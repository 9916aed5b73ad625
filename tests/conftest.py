from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.azurite import azurite  # noqa: F401  (the session's Azurite)
from tests.support.hook_receiver import receiver  # noqa: F401  (a hook receiver per test)
from tests.support.redis_cluster import RedisClusterServers
from tests.support.redis_cluster import redis_cluster as start_redis_cluster
from tests.support.servers import S3_ENV, RedisServer, S3Server, redis_server, s3_server
from tests.support.tls import make_ca


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-long",
        action="store_true",
        help="run the long version of tests/reliability (also TUSD_RELIABILITY_LONG=1)",
    )


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """A real redis-server process for the whole session; tests use distinct key prefixes."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """moto's S3 API server over HTTP for the whole session; tests use distinct buckets."""
    for key, value in S3_ENV.items():
        os.environ.setdefault(key, value)
    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A six-node Redis Cluster (three primaries, three replicas) for the whole session; tests
    use distinct key prefixes and must leave all six nodes running."""
    with start_redis_cluster() as servers:
        yield servers


@pytest.fixture(scope="session")
def s3_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 API server over HTTPS, with a certificate signed by a CA of the session's own
    (`.ca_bundle`: what a client must be told to trust; nothing else trusts it)."""
    for key, value in S3_ENV.items():
        os.environ.setdefault(key, value)
    with s3_server(ca=make_ca(tmp_path_factory.mktemp("s3-tls"))) as server:
        yield server
