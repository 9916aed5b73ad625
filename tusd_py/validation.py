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
from urllib.parse import urlsplit, urlunsplit

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
# How to reach Redis and what to wait for: meaningless without --redis-url or --redis-sentinels.
REDIS_CONNECTION_OPTIONS = (
    "redis_sentinels",
    "redis_sentinel_master",
    "redis_sentinel_password",
    "redis_username",
    "redis_password",
    "redis_ca_file",
    "redis_cert_file",
    "redis_key_file",
    "redis_wait_replicas",
    "redis_wait_timeout",
)


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
    check_redis_options(config)
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
    # The URL may carry a password: messages show it redacted.
    shown = redacted(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"the Redis URL {shown!r} is not valid: {exc}", "redis_url") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"the Redis URL must start with redis://, rediss:// or unix://, got {shown!r}",
            "redis_url",
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"the Redis URL {shown!r} names no host", "redis_url")
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise ConfigError(
            f"the Redis URL's database must be a number, got {database!r}", "redis_url"
        )
    if cluster and (parts.scheme == "unix" or database not in ("", "0")):
        # A Cluster has database 0 only, and nodes are found by address.
        raise ConfigError(
            f"with --redis-cluster the Redis URL must be redis:// or rediss:// with database 0, "
            f"got {shown!r}",
            "redis_url",
        )


def check_redis_options(config: Config) -> None:
    """Sentinel, Cluster, credentials, TLS files and WAIT: each needs the others it depends on."""
    if config.redis_cluster and config.redis_sentinels:
        raise ConfigError(
            "choose one of --redis-cluster and --redis-sentinels: a Cluster fails over by itself",
            "redis_cluster",
        )
    if config.redis_sentinels and not config.redis_sentinel_master:
        raise ConfigError(
            "--redis-sentinels needs the name of the primary's group that Sentinel "
            "monitors (--redis-sentinel-master)",
            "redis_sentinel_master",
        )
    given = changed_fields(config) & set(REDIS_CONNECTION_OPTIONS)
    if given and config.redis_url is None:
        option = min(given, key=REDIS_CONNECTION_OPTIONS.index)
        raise ConfigError(
            f"{option_names(option).split(' / ')[0]} is set but neither --redis-url nor "
            "--redis-sentinels is, so it would be ignored",
            option,
        )
    if config.redis_url is None:
        return
    if config.redis_sentinels:
        try:
            parse_sentinels(config.redis_sentinels)
        except ValueError as exc:
            raise ConfigError(f"a Sentinel address is wrong: {exc}", "redis_sentinels") from None
        if urlsplit(config.redis_url).scheme == "unix":
            raise ConfigError(
                "with --redis-sentinels the Redis URL must be redis:// or rediss://",
                "redis_url",
            )
    else:
        for option in ("redis_sentinel_master", "redis_sentinel_password"):
            if getattr(config, option):
                raise ConfigError(
                    f"{option_names(option).split(' / ')[0]} is set but --redis-sentinels "
                    "is not, so it would be ignored",
                    option,
                )
    parts = urlsplit(config.redis_url)
    if parts.username and config.redis_username:
        raise ConfigError(
            "the Redis user is given both in --redis-url and in --redis-username", "redis_username"
        )
    if parts.password and config.redis_password:
        raise ConfigError(
            "the Redis password is given both in --redis-url and in --redis-password",
            "redis_password",
        )
    if config.redis_username and not config.redis_password and not parts.password:
        raise ConfigError(
            "--redis-username needs a password (--redis-password or in --redis-url)",
            "redis_password",
        )
    tls_files = ("redis_ca_file", "redis_cert_file", "redis_key_file")
    for option in tls_files:
        path = getattr(config, option)
        if path is None:
            continue
        if parts.scheme != "rediss":
            raise ConfigError(
                f"{option_names(option).split(' / ')[0]} needs a rediss:// URL (TLS)", option
            )
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", option) from None
    if bool(config.redis_cert_file) != bool(config.redis_key_file):
        raise ConfigError(
            "a client certificate needs both --redis-cert-file and --redis-key-file",
            "redis_key_file" if config.redis_cert_file else "redis_cert_file",
        )
    if config.redis_wait_replicas < 0:
        raise ConfigError(
            f"the replicas to wait for must be 0 or more, got {config.redis_wait_replicas}",
            "redis_wait_replicas",
        )
    if config.redis_wait_timeout <= 0:
        raise ConfigError(
            "the wait for replicas must be a duration > 0 (WAIT 0 would wait for ever)",
            "redis_wait_timeout",
        )


def redacted(url: str) -> str:
    """The URL with its password (and user name) replaced by `***`, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = "***@" + host + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_sentinels(addresses: list[str]) -> list[tuple[str, int]]:
    """['10.0.0.1:26379', '[::1]:26379'] -> [(host, port), ...]; ValueError if one is wrong."""
    found = []
    for address in addresses:
        host, sep, port = address.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"{address!r} is not HOST:PORT")
        found.append((host, int(port)))
    return found


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
