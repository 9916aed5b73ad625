"""Checks of a `Config` that need nothing running: each refusal names the option at fault.

A `ConfigError` reads `<what is wrong> (--option / TUSD_OPTION)`, so an operator sees at once
which flag or variable to change; the CLI prints it as one line and exits 2. Checks that touch
the machine (binding the port, creating the upload directory) live in `preflight`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from tusd_py.config import Config

ENV_PREFIX = "TUSD"
# Config fields whose CLI option is not simply `--<field-with-dashes>`.
_OPTION_OF_FIELD = {"cors_allow_credentials": "cors_credentials"}
# Config fields with no CLI option (embedding only): messages name the field itself.
FIELDS_WITHOUT_OPTION = frozenset({"max_metadata_size", "s3_buffer_size"})
# Options that only mean something with the store they configure.
STORE_ONLY_OPTIONS = {
    "s3_bucket": (
        "s3_endpoint",
        "s3_region",
        "s3_prefix",
        "s3_part_size",
        "s3_max_concurrency",
        "s3_buffer_size",
        "s3_tails",
        "s3_direct",
        "s3_direct_path",
        "s3_direct_presign_expiry",
        "s3_sse",
        "s3_sse_kms_key_id",
        "s3_storage_class",
        "s3_max_parts",
        "s3_min_part_size",
        "s3_key_template",
        "s3_allowed_buckets",
        "s3_ca_bundle",
        "s3_addressing_style",
        "s3_download",
        "s3_download_expiry",
        "s3_checksum",
    ),
    "azure_container": ("azure_endpoint", "azure_prefix", "azure_blob_access_tier"),
}
REDIS_SCHEMES = ("redis", "rediss", "unix")


def option_names(field: str) -> str:
    """'--s3-bucket / TUSD_S3_BUCKET' for the Config field `s3_bucket`."""
    if field in FIELDS_WITHOUT_OPTION:
        return f"Config.{field}"
    option = _OPTION_OF_FIELD.get(field, field)
    return f"--{option.replace('_', '-')} / {ENV_PREFIX}_{option.upper()}"


class ConfigError(ValueError):
    """A configuration value that cannot work, and the option it came from."""

    def __init__(self, what: str, field: str) -> None:
        super().__init__(f"{what} ({option_names(field)})")
        self.what = what
        self.field = field


def check_config(config: Config) -> None:
    """Raise a `ConfigError` for the first value that cannot work."""
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port {config.port} is not between 0 and 65535", "port")
    if not config.metrics_path.startswith("/"):
        raise ConfigError(
            f"the metrics path must start with '/', got {config.metrics_path!r}", "metrics_path"
        )
    if config.hooks_http is not None:
        check_http_url(config.hooks_http, "hooks_http", "the hook URL")
    if config.s3_endpoint is not None:
        check_http_url(config.s3_endpoint, "s3_endpoint", "the S3 endpoint")
    if config.s3_ca_bundle is not None and not os.path.isfile(config.s3_ca_bundle):
        raise ConfigError(f"the CA bundle {config.s3_ca_bundle} is not a file", "s3_ca_bundle")
    if config.azure_endpoint is not None:
        check_http_url(config.azure_endpoint, "azure_endpoint", "the Azure endpoint")
    if config.redis_url is not None:
        check_redis_url(config.redis_url, cluster=config.redis_cluster)
    check_store_options(config, changed_fields(config))


def check_http_url(url: str, field: str, what: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"{what} {url!r} is not a valid URL: {exc}", field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must be an http:// or https:// URL, got {url!r}", field)


def check_redis_url(url: str, *, cluster: bool = False) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"the Redis URL {url!r} is not valid: {exc}", "redis_url") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"the Redis URL must start with redis://, rediss:// or unix://, got {url!r}",
            "redis_url",
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"the Redis URL {url!r} names no host", "redis_url")
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise ConfigError(
            f"the Redis URL's database must be a number, got {database!r}", "redis_url"
        )
    if cluster and (parts.scheme == "unix" or database not in ("", "0")):
        # A Cluster has database 0 only, and nodes are found by address.
        raise ConfigError(
            f"with --redis-cluster the Redis URL must be redis:// or rediss:// with database 0, "
            f"got {url!r}",
            "redis_url",
        )


def changed_fields(config: Config) -> set[str]:
    """The fields whose value differs from the default: the options someone set."""
    changed = set()
    for field in dataclasses.fields(config):
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            continue
        if getattr(config, field.name) != default:
            changed.add(field.name)
    return changed


def check_store_options(config: Config, given: Iterable[str]) -> None:
    """Refuse S3 options without --s3-bucket (and Azure's without --azure-container): the
    uploads would otherwise go to local files while the operator thinks they go to the bucket."""
    given = set(given)
    for selector, options in STORE_ONLY_OPTIONS.items():
        if getattr(config, selector):
            continue
        for option in options:
            if option in given:
                raise ConfigError(
                    f"{option_names(option).split(' / ')[0]} is set but "
                    f"--{selector.replace('_', '-')} is not, so it would be ignored",
                    option,
                )
