"""One typed configuration object; the CLI and `create_app` both build on it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from tusd_py.cors import normalise_origins
from tusd_py.validation import ConfigError, check_config

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
S3Tails = Literal["auto", "redis", "s3"]
S3Encryption = Literal["AES256", "aws:kms"]
S3AddressingStyle = Literal["auto", "path", "virtual"]
S3Download = Literal["proxy", "redirect"]
S3Checksum = Literal["auto", "off", "sha256"]
AzureAccessTier = Literal["hot", "cool", "cold", "archive"]

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"(?P<n>\d+)(?P<unit>[KMGT]i?B?|B)?", re.IGNORECASE)
_UNIT_BYTES = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(text: str) -> float:
    """'30s', '15m', '24h', '7d', '250ms' or plain seconds -> seconds."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 24h, 7d)")
    return float(m["n"]) * _UNIT_SECONDS[m["unit"]]


def parse_size(text: str) -> int:
    """'8MiB', '5M', '1G', '1024' -> bytes (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 1024, 8MiB, 5GiB)")
    unit = (m["unit"] or "").lower()[:1]
    return int(m["n"]) * _UNIT_BYTES[unit]


@dataclass
class Config:
    # HTTP
    host: str = "127.0.0.1"
    port: int = 8080
    base_path: str = "/files/"
    behind_proxy: bool = False
    cors_origins: list[str] = field(default_factory=lambda: ["*"])
    cors_allow_credentials: bool = False
    cors_refusal_log_interval: float = 60.0  # a refused origin is logged once per this
    log_level: LogLevel = "info"

    # Limits and timeouts (seconds)
    max_size: int = 0  # 0 = unlimited
    max_metadata_size: int = 8192
    # Partials one `Upload-Concat: final` may name: far beyond what parallel-upload clients use
    # (a handful), and with room in S3's 10,000 parts for several parts per partial.
    max_concat_parts: int = 1000
    expiration: float = 24 * 3600.0  # 0 = uploads never expire
    expiration_sweep_interval: float = 300.0
    retain_finished: float = 0.0  # finished uploads are deleted this long after (0 = kept)
    read_timeout: float = 60.0  # a PATCH body that sends nothing this long is cut off
    body_min_rate: int = 1024  # bytes/s a body must average over read_timeout (0 = no minimum)
    header_timeout: float = 30.0  # a request head must arrive within this long
    max_header_size: int = 64 * 1024  # larger request heads are answered 431
    # Idle connections between requests are closed after this. Longer than the 60 s that
    # proxies and client pools commonly keep idle connections (nginx upstream keepalive_timeout,
    # AWS ALB): closing first races the client's next request (issue 14, finding 16).
    keep_alive_timeout: float = 75.0
    lock_acquire_timeout: float = 10.0
    lock_lease: float = 15.0  # Redis lease; renewed while the holder works

    # Storage: local files by default, S3 when s3_bucket is set
    upload_dir: str = "./data"
    s3_bucket: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_prefix: str = ""
    s3_part_size: int = 8 * 1024**2
    s3_max_concurrency: int = 4
    s3_buffer_size: int = 64 * 1024**2  # part bytes in memory, all uploads together
    s3_tails: S3Tails = "auto"  # where incomplete parts wait: Redis when there is one, else S3
    # Direct-to-S3 uploads (@uppy/aws-s3 with companionEndpoint) beside tus: docs/direct-s3.md
    s3_direct: bool = False
    s3_direct_path: str | None = None  # None: <base_path>s3
    s3_direct_presign_expiry: float = 900.0  # how long a presigned part URL or POST is valid
    s3_sse: S3Encryption | None = None  # server-side encryption of every object written
    s3_sse_kms_key_id: str | None = None  # with s3_sse "aws:kms": the key (else the bucket's)
    s3_storage_class: str | None = None  # of every object written (default: the bucket's)
    s3_max_parts: int = 10_000  # parts one multipart upload may have (Scaleway: 1,000)
    s3_min_part_size: int = 5 * 1024**2  # the smallest part but the last the provider takes
    s3_key_template: str = ""  # object keys, e.g. "{prefix}{yyyy}/{mm}/{id}" ("" = prefix + id)
    # Buckets besides s3_bucket that a pre-create hook's Storage.Bucket may name
    s3_allowed_buckets: list[str] = field(default_factory=list)
    # TLS and addressing: the CA bundle to trust (else AWS_CA_BUNDLE, else the system's); "auto"
    # is virtual-hosted on AWS and path-style with an s3_endpoint
    s3_ca_bundle: str | None = None
    s3_addressing_style: S3AddressingStyle = "auto"
    s3_download: S3Download = "proxy"  # GET of a finished upload: through us, or 302 to S3
    s3_download_expiry: float = 300.0  # lifetime of a presigned download URL
    s3_checksum: S3Checksum = "auto"  # S3 flexible checksums on parts: auto is sha256 on AWS only
    # Azure Blob Storage when azure_container is set (credentials from AZURE_STORAGE_* variables)
    azure_container: str | None = None
    azure_endpoint: str | None = None
    azure_prefix: str = ""
    azure_blob_access_tier: AzureAccessTier | None = None  # set on a blob when it is finished

    # Shared state: Redis when redis_url is set, else local state beside the data
    local_state_cache: int = 64 * 1024**2  # bytes of recent infos kept in memory without Redis
    redis_url: str | None = None
    redis_prefix: str = "tusd"
    redis_cluster: bool = False  # redis_url is one node of a Redis Cluster
    redis_max_connections: int = 256  # per instance; more commands at once wait for one
    redis_expired_ttl: float = 3600.0  # an expired unfinished upload's state lives this much longer
    # High availability and security (docs/redis.md): the primary found through Sentinel, ACL
    # credentials (repr=False: a Config printed never shows them), TLS files for rediss://.
    redis_sentinels: list[str] = field(default_factory=list)  # HOST:PORT of each Sentinel
    redis_sentinel_master: str | None = None
    redis_sentinel_password: str | None = field(default=None, repr=False)
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    redis_ca_file: str | None = None
    redis_cert_file: str | None = None
    redis_key_file: str | None = None
    redis_wait_replicas: int = 0  # 0: a commit is acknowledged once the primary has it
    redis_wait_timeout: float = 1.0

    # Hooks (see docs/hooks.md); HTTP hooks are off until hooks_http is set, file hooks until
    # hooks_dir is (one of the two, as in tusd)
    hooks_http: str | None = None
    hooks_dir: str | None = None
    hooks_http_retry: int = 3
    hooks_http_backoff: float = 1.0
    hooks_http_timeout: float = 15.0
    hooks_http_forward_headers: list[str] = field(default_factory=list)
    hooks_enabled_events: list[str] = field(
        default_factory=lambda: [
            "pre-create",
            "post-create",
            "post-receive",
            "post-terminate",
            "post-finish",
        ]
    )
    progress_hooks_interval: float = 1.0
    hooks_post_workers: int = 16  # post-* deliveries in flight (each its own connection)
    hooks_post_queue_size: int = 10_000  # post-* events waiting; more are dropped and counted
    hooks_post_drain_timeout: float = 10.0  # how long shutdown delivers what is queued

    # Operations
    workers: int = 1  # processes serving the port (cli.py supervises them; see workers.py)
    log_format: LogFormat = "text"
    metrics: bool = True
    metrics_path: str = "/metrics"
    demo: bool = False  # serve the upload demo page at /

    def __post_init__(self) -> None:
        if not self.base_path.startswith("/"):
            self.base_path = "/" + self.base_path
        if not self.base_path.endswith("/"):
            self.base_path += "/"
        if self.max_size < 0:
            raise ConfigError("the largest upload must be 0 (no limit) or more", "max_size")
        if self.max_concat_parts < 1:
            raise ConfigError(
                f"a final upload must be allowed at least 1 partial, got {self.max_concat_parts}",
                "max_concat_parts",
            )
        if self.retain_finished < 0:
            raise ConfigError(
                "finished uploads must be kept 0 (for ever) or more",
                "retain_finished",
            )
        if self.expiration_sweep_interval <= 0:
            raise ConfigError(
                "the expiry sweep interval must be a duration > 0", "expiration_sweep_interval"
            )
        self.cors_origins = normalise_origins(self.cors_origins)
        if self.cors_allow_credentials and "*" in self.cors_origins:
            # Starlette answers a credentialed request from any origin with that origin: every
            # site could then act with the user's cookies.
            raise ConfigError(
                "--cors-credentials needs --cors-origins to list the origins allowed, not '*'",
                "cors_allow_credentials",
            )
        if self.hooks_http and self.hooks_dir:
            raise ValueError("choose one of --hooks-http and --hooks-dir, not both")
        if self.redis_expired_ttl <= 0:
            raise ConfigError(
                "an expired upload's Redis state must be kept more than 0 s", "redis_expired_ttl"
            )
        if self.redis_sentinels and self.redis_url is None and self.redis_sentinel_master:
            # The URL is the switch to Redis; with Sentinel its host is not used (see
            # docs/redis.md), so a plain one naming the primary's group will do.
            self.redis_url = f"redis://{self.redis_sentinel_master}/0"
        if self.workers < 1:
            raise ConfigError(
                f"--workers must be 1 or more (or auto), got {self.workers}", "workers"
            )
        if self.workers > 1 and not self.redis_url and (self.s3_bucket or self.azure_container):
            # Their local state keeps upload details (tails, block lists) in the process.
            raise ConfigError(
                "--workers above 1 with S3 or Azure storage needs --redis-url: only the file "
                "store shares its uploads between workers without Redis",
                "workers",
            )
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ConfigError("a KMS key id needs --s3-sse aws:kms", "s3_sse_kms_key_id")
        if not 1 <= self.s3_max_parts <= 10_000:
            raise ConfigError(
                f"S3 allows 1 to 10000 parts per upload, got {self.s3_max_parts}", "s3_max_parts"
            )
        if not 5 * 1024**2 <= self.s3_min_part_size <= 5 * 1024**3:
            raise ConfigError(
                "the smallest S3 part must be between 5 MiB (S3's minimum) and 5 GiB, got "
                f"{self.s3_min_part_size} bytes",
                "s3_min_part_size",
            )
        if self.redis_cluster and not self.redis_url:
            raise ConfigError(
                "--redis-cluster needs --redis-url (a node of the Cluster)", "redis_cluster"
            )
        if not 1 <= self.s3_download_expiry <= 7 * 24 * 3600:
            raise ConfigError(
                "a presigned download URL must live between 1 s and 7 days (SigV4's limit)",
                "s3_download_expiry",
            )
        if self.s3_tails == "redis" and not self.redis_url:
            raise ConfigError("--s3-tails redis needs --redis-url", "s3_tails")
        if self.s3_direct_presign_expiry <= 0 or self.s3_direct_presign_expiry > 7 * 86400:
            # S3 refuses presigned requests valid for more than 7 days.
            raise ConfigError(
                "presigned URLs must be valid for more than 0 s and at most 7d",
                "s3_direct_presign_expiry",
            )
        if self.s3_direct_path is not None:
            self.s3_direct_path = "/" + self.s3_direct_path.strip("/")
        check_config(self)

    @property
    def direct_s3_path(self) -> str:
        """Where the direct-to-S3 routes are mounted: Uppy calls `<companionEndpoint>/s3/...`."""
        return self.s3_direct_path or self.base_path + "s3"

    @property
    def state_kind(self) -> Literal["local", "redis"]:
        return "redis" if self.redis_url else "local"
