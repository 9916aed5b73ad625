"""Sentinel, credentials, TLS files and WAIT options: what `Config` refuses and what it builds
(fast, in-process; tests/integration/test_redis_tls.py and test_redis_sentinel.py run them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import MasterNotFoundError

from tusd_py.config import Config
from tusd_py.redis_client import redis_unavailable
from tusd_py.redis_connect import (
    CountedSentinelConnection,
    CountedSSLConnection,
    SentinelWaitingPool,
    client_for,
    topology_of,
)
from tusd_py.validation import ConfigError, parse_sentinels, redacted

URL = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"redis_sentinels": ["h:26379"]}, "needs the name of the primary's group"),
        (
            {"redis_url": URL, "redis_sentinels": ["h"], "redis_sentinel_master": "m"},
            "a Sentinel address is wrong: 'h' is not HOST:PORT (--redis-sentinels",
        ),
        (
            {"redis_url": URL, "redis_sentinels": ["h:99999"], "redis_sentinel_master": "m"},
            "'h:99999' is not HOST:PORT",
        ),
        ({"redis_url": URL, "redis_sentinel_master": "m"}, "--redis-sentinels is not"),
        ({"redis_url": URL, "redis_sentinel_password": "x"}, "--redis-sentinels is not"),
        (
            {"redis_password": "x"},
            "--redis-password is set but neither --redis-url nor --redis-sentinels is",
        ),
        ({"redis_wait_replicas": 1}, "--redis-wait-replicas is set but neither --redis-url"),
        (
            {"redis_url": "redis://:a@h/0", "redis_password": "b"},
            "given both in --redis-url and in --redis-password",
        ),
        (
            {"redis_url": "redis://u:a@h/0", "redis_username": "v"},
            "given both in --redis-url and in --redis-username",
        ),
        ({"redis_url": URL, "redis_username": "u"}, "--redis-username needs a password"),
        ({"redis_url": URL, "redis_ca_file": "/etc/hostname"}, "needs a rediss:// URL"),
        (
            {"redis_url": "rediss://h/0", "redis_ca_file": "/nonexistent/ca.pem"},
            "cannot read /nonexistent/ca.pem: No such file or directory (--redis-ca-file",
        ),
        (
            {"redis_url": "rediss://h/0", "redis_cert_file": "/etc/hostname"},
            "needs both --redis-cert-file and --redis-key-file (--redis-key-file",
        ),
        ({"redis_url": URL, "redis_wait_replicas": -1}, "must be 0 or more"),
        ({"redis_url": URL, "redis_wait_timeout": 0.0}, "(--redis-wait-timeout"),
        (
            {
                "redis_url": "unix:///run/redis.sock",
                "redis_sentinels": ["h:1"],
                "redis_sentinel_master": "m",
            },
            "must be redis:// or rediss://",
        ),
    ],
)
def test_redis_options_name_the_option_at_fault(options: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Config(**options)
    assert says in str(refused.value)


def test_a_password_in_the_url_never_shows_in_a_refusal() -> None:
    with pytest.raises(ConfigError) as refused:
        Config(redis_url="redis://user:s3cret@host:notaport/0")
    assert "s3cret" not in str(refused.value) and "user" not in str(refused.value)
    assert "redis://***@host/0" in str(refused.value)


def test_redacted_hides_credentials_only() -> None:
    assert redacted("rediss://u:p@[::1]:6380/2") == "rediss://***@[::1]:6380/2"
    assert redacted("redis://h:1/0") == "redis://h:1/0"


def test_passwords_are_not_in_the_config_repr() -> None:
    config = Config(
        redis_url=URL,
        redis_username="tusd",
        redis_password="pw-one",
        redis_sentinels=["h:1"],
        redis_sentinel_master="m",
        redis_sentinel_password="pw-two",
    )
    assert "pw-one" not in repr(config) and "pw-two" not in repr(config)


def test_sentinels_parse_hosts_and_ipv6() -> None:
    assert parse_sentinels(["a:1", " [::1]:26379 "]) == [("a", 1), ("::1", 26379)]


def test_sentinel_without_a_url_gets_one_naming_the_group() -> None:
    config = Config(redis_sentinels=["127.0.0.1:26379"], redis_sentinel_master="mymaster")
    assert config.redis_url == "redis://mymaster/0" and config.state_kind == "redis"


async def test_the_sentinel_client_takes_url_credentials_and_database() -> None:
    config = Config(
        redis_url="redis://tusd:pw@ignored/3",
        redis_sentinels=["127.0.0.1:26379", "127.0.0.1:26380"],
        redis_sentinel_master="mymaster",
        redis_wait_replicas=1,
        redis_wait_timeout=5.0,
    )
    client = client_for(config)
    try:
        assert isinstance(client, Redis)
        pool = client.connection_pool
        assert isinstance(pool, SentinelWaitingPool)
        assert pool.connection_class is CountedSentinelConnection
        kwargs = pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("tusd", "pw", 3)
        # The read of a WAIT's reply outlasts the WAIT itself.
        assert kwargs["socket_timeout"] > 5.0
        assert topology_of(config, client).mode == "sentinel"
        assert "pw" not in repr(topology_of(config, client))
    finally:
        await client.aclose()


async def test_a_single_tls_client_uses_the_ca_file_and_counts_reconnects(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a connection is made")
    config = Config(redis_url="rediss://127.0.0.1:6380/0", redis_ca_file=str(ca))
    client = client_for(config)
    try:
        assert isinstance(client, Redis)
        pool = client.connection_pool
        assert issubclass(pool.connection_class, SSLConnection)
        assert pool.connection_class is CountedSSLConnection
        assert pool.connection_kwargs["ssl_ca_certs"] == str(ca)
        assert topology_of(config, client).primary == "127.0.0.1:6380"
    finally:
        await client.aclose()


def test_other_redis_options_without_redis_are_still_accepted() -> None:
    Config(redis_prefix="other", redis_expired_ttl=5.0, redis_max_connections=8)


def test_no_primary_from_sentinel_is_a_short_503() -> None:
    long = "No master found for 'mymaster' : <redis.asyncio.client.Redis(<...>)> - " * 3
    error = redis_unavailable(MasterNotFoundError(long), "EVALSHA commit")
    assert error.status == 503
    assert error.message == (
        "Redis is unreachable: No master found for 'mymaster' (no Sentinel named a primary)"
    )
