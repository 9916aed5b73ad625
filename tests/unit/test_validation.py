"""`Config` refuses values that cannot work with a message naming the option (fast, in-process;
tests/ops/test_config_errors.py runs the real command)."""

from __future__ import annotations

import dataclasses

import pytest

from tusd_py.cli import main
from tusd_py.config import Config
from tusd_py.validation import FIELDS_WITHOUT_OPTION, ConfigError, option_names


def test_every_config_field_has_its_option_or_is_listed_without_one() -> None:
    options = {param.name for param in main.params}
    for field in dataclasses.fields(Config):
        if field.name in FIELDS_WITHOUT_OPTION:
            assert field.name not in options
            continue
        flag = option_names(field.name).split(" / ")[0]
        assert flag[2:].replace("-", "_") in options, field.name


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"s3_buffer_size": 1}, "Config.s3_buffer_size is set but --s3-bucket is not"),
        ({"azure_endpoint": "http://127.0.0.1:10000/a"}, "(--azure-endpoint / TUSD_AZURE_END"),
        ({"redis_url": "redis://h/zero"}, "database must be a number, got 'zero'"),
        ({"redis_cluster": True}, "--redis-cluster needs --redis-url (a node of the Cluster)"),
        (
            {"redis_cluster": True, "redis_url": "redis://h:7000/1"},
            "with --redis-cluster the Redis URL must be redis:// or rediss:// with database 0",
        ),
        (
            {"redis_cluster": True, "redis_url": "unix:///run/redis.sock"},
            "(--redis-url / TUSD_REDIS_URL)",
        ),
        ({"hooks_http": "http://:80/x"}, "(--hooks-http / TUSD_HOOKS_HTTP)"),
    ],
)
def test_config_names_the_option_at_fault(options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Config(**options)  # type: ignore[arg-type]
    assert says in str(refused.value)


def test_a_store_option_with_its_store_is_accepted() -> None:
    Config(s3_bucket="b", s3_region="eu-west-1", s3_buffer_size=1, redis_url="redis://h:6379/0")
    Config(azure_container="c", azure_prefix="p/", redis_url="unix:///run/redis.sock")


def test_wait_replicas_is_accepted_on_a_cluster() -> None:
    # The WAIT goes on the connection of the primary owning the upload's slot (redis_slot.py).
    Config(redis_url="redis://h:7000/0", redis_cluster=True, redis_wait_replicas=1)
