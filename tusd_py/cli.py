"""`tusd-py`: a thin click command over `Config` and uvicorn."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import click
import uvicorn
from starlette.applications import Starlette

from tusd_py.app import STORES, create_app
from tusd_py.config import Config, parse_duration, parse_size
from tusd_py.connections import http_protocol
from tusd_py.hooks import parse_hook_types
from tusd_py.logs import announcement, configure_logging
from tusd_py.preflight import check_redis, check_upload_dir, listening_socket
from tusd_py.probes import warn_if_not_ready
from tusd_py.protocol.context import TusContext
from tusd_py.supervisor import supervise
from tusd_py.validation import ENV_PREFIX, check_store_options
from tusd_py.workers import available_cores, worker_fds


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _workers(ctx: click.Context, param: click.Parameter, value: str) -> int:
    if value.strip().lower() == "auto":
        return available_cores()
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(
            f"not a number of workers: {value!r} (use a count of 1 or more, or auto)"
        ) from None


def _comma_list(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _hook_events(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    try:
        return [hook.value for hook in parse_hook_types(value)]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class _OneLineErrors(click.Command):
    """A bad flag or variable is one line, `tusd-py: error: ...`, and exit status 2, like every
    other refused configuration (click would print the usage and a hint on three more)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.format_message())
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            message = exc.format_message()
            if isinstance(exc, click.BadParameter) and exc.param is not None and exc.param.name:
                message += f" ({ENV_PREFIX}_{exc.param.name.upper()})"
            click.echo(f"tusd-py: error: {message}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class _Server(uvicorn.Server):
    """On SIGINT/SIGTERM, end in-flight PATCH bodies at once so they commit and answer, shut
    down, and exit 0: uvicorn would raise the signal again once it is done (exit 143, or
    "Aborted!" and 1 for Ctrl-C), which reports a clean shutdown as a failure."""

    tus: TusContext
    # Printed once the server really serves: the stores opened and the socket accepts.
    announce: list[str]
    # Called then too: a worker tells its supervisor (workers.py).
    on_ready: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            await warn_if_not_ready(self.tus)
            for line in self.announce:
                print(line, flush=True)
            if self.on_ready is not None:
                self.on_ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.tus.stop_all_readers()
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


@click.command(
    cls=_OneLineErrors, context_settings={"auto_envvar_prefix": ENV_PREFIX, "show_default": True}
)
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", default=8080, type=int, help="Port to listen on; 0 picks a free port.")
@click.option("--base-path", default="/files/", help="Path of the tus endpoint.")
@click.option("--upload-dir", default="./data", help="Directory of the local file store.")
@click.option(
    "--max-size",
    default="0",
    callback=_size,
    help="Largest upload accepted (0 = no limit), e.g. 5GiB.",
)
@click.option(
    "--max-concat-parts",
    default=1000,
    type=int,  # Config refuses < 1 in one line; click's range error would be four
    help="Most partial uploads one Upload-Concat: final may name; more are answered 400.",
)
@click.option(
    "--expiration",
    default="24h",
    callback=_duration,
    help="Unfinished uploads expire this long after their last change (0 = never).",
)
@click.option(
    "--retain-finished",
    default="0",
    callback=_duration,
    help="Delete finished uploads (empty ones too) this long after they finished (0 = keep "
    "them for ever). File store only; for S3 and Azure use a lifecycle rule.",
)
@click.option(
    "--expiration-sweep-interval",
    default="5m",
    callback=_duration,
    help="How often the sweep deletes expired uploads, and finished ones past --retain-finished.",
)
@click.option(
    "--read-timeout",
    default="60s",
    callback=_duration,
    help="Cut off a request body that sends nothing for this long.",
)
@click.option(
    "--body-min-rate",
    default="1KiB",
    callback=_size,
    help="Cut off a request body slower than this many bytes per second, averaged over "
    "--read-timeout of waiting for it (0 = no minimum); the bytes received are kept.",
)
@click.option(
    "--header-timeout",
    default="30s",
    callback=_duration,
    help="Close a connection whose request head does not arrive within this long (slowloris).",
)
@click.option(
    "--max-header-size",
    default="64KiB",
    callback=_size,
    help="Answer 431 to a request head larger than this.",
)
@click.option(
    "--keep-alive-timeout",
    default="75s",
    callback=_duration,
    help="Close a kept-alive connection idle for this long between requests. Keep it above the "
    "idle timeout of every proxy and client pool in front (nginx upstream, AWS ALB: 60s), so "
    "that they close first: a request sent as the server closes is lost.",
)
@click.option(
    "--lock-acquire-timeout",
    default="10s",
    callback=_duration,
    help="How long a request waits for a busy upload before 423.",
)
@click.option(
    "--lock-lease",
    default="15s",
    callback=_duration,
    help="Redis lock lease; a crashed holder's lock frees after this.",
)
@click.option(
    "--cors-origins",
    default="*",
    help="Comma-separated origins allowed by CORS ('*' = any, '' = CORS off), each "
    "scheme://host[:port] (a trailing slash and capitals are fine; a path is refused).",
)
@click.option(
    "--cors-credentials/--no-cors-credentials",
    default=False,
    help="Allow credentialed CORS requests (needs --cors-origins listing the origins, not *).",
)
@click.option(
    "--cors-refusal-log-interval",
    default="60s",
    callback=_duration,
    help="A refused CORS origin or preflight is logged once per this interval per origin.",
)
@click.option(
    "--behind-proxy/--no-behind-proxy",
    default=False,
    help="Trust Forwarded / X-Forwarded-* for Location URLs and the client's address.",
)
@click.option(
    "--redis-url", default=None, help="Keep upload state and locks in this Redis (many instances)."
)
@click.option(
    "--local-state-cache",
    default="64MiB",
    callback=_size,
    help="Without --redis-url: memory for the infos of recent uploads (at most 10,000; 0 = "
    "none), so a HEAD need not read their .info; older ones are read back from it. Off with "
    "--workers above 1, where another worker may have changed an upload.",
)
@click.option("--redis-prefix", default="tusd", help="Prefix of every Redis key.")
@click.option(
    "--redis-cluster/--no-redis-cluster",
    default=False,
    help="--redis-url is one node of a Redis Cluster (Redis 7 or newer); the others are found "
    "from it.",
)
@click.option(
    "--redis-max-connections",
    default=256,
    type=click.IntRange(min=1),
    help="Redis connections per instance for state and locks; more commands at once wait up "
    "to 5s for one, then 503.",
)
@click.option(
    "--redis-expired-ttl",
    default="1h",
    callback=_duration,
    help="How long Redis keeps the state of an unfinished upload past its expiry (the expiry "
    "sweep deletes the upload itself).",
)
@click.option(
    "--redis-sentinels",
    default="",
    callback=_comma_list,
    help="Comma-separated HOST:PORT of Redis Sentinels: the primary is found through them and "
    "followed across failovers (with --redis-sentinel-master; --redis-url may then be left out, "
    "or give only scheme, credentials and database).",
)
@click.option(
    "--redis-sentinel-master",
    default=None,
    help="The name under which the Sentinels monitor the primary (e.g. mymaster).",
)
@click.option(
    "--redis-sentinel-password",
    default=None,
    help="Password of the Sentinels themselves (Sentinel's requirepass), if they have one.",
)
@click.option(
    "--redis-username",
    default=None,
    help="Redis ACL user (instead of one in --redis-url).",
)
@click.option(
    "--redis-password",
    default=None,
    help="Redis password (instead of one in --redis-url, which shows in process lists); prefer "
    "the variable.",
)
@click.option(
    "--redis-ca-file",
    default=None,
    help="With rediss://: PEM file of the CA that signed Redis's certificate (default: the "
    "system's CAs).",
)
@click.option(
    "--redis-cert-file",
    default=None,
    help="With rediss://: PEM client certificate, for Redis with tls-auth-clients (with "
    "--redis-key-file).",
)
@click.option(
    "--redis-key-file", default=None, help="With rediss://: the client certificate's key."
)
@click.option(
    "--redis-wait-replicas",
    default=0,
    type=click.IntRange(min=0),
    help="Acknowledge a creation or an offset only once this many replicas have it (WAIT), so "
    "it survives a failover; 0 = once the primary has it.",
)
@click.option(
    "--redis-wait-timeout",
    default="1s",
    callback=_duration,
    help="How long a commit waits for --redis-wait-replicas; then the request answers 503 and "
    "the client resumes from HEAD.",
)
@click.option(
    "--s3-bucket", default=None, help="Store uploads in this S3 bucket instead of local files."
)
@click.option(
    "--s3-endpoint",
    default=None,
    help="S3 endpoint URL for S3-compatible stores (path-style unless --s3-addressing-style).",
)
@click.option(
    "--s3-region",
    default=None,
    help="The bucket's S3 region (else AWS_DEFAULT_REGION or the profile's). Credentials come "
    "from the AWS chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an "
    "instance role.",
)
@click.option("--s3-prefix", default="", help="Key prefix for objects in the bucket.")
@click.option(
    "--s3-part-size",
    default="8MiB",
    callback=_size,
    help="S3 multipart part size (grown to fit --s3-max-parts parts).",
)
@click.option(
    "--s3-max-concurrency", default=4, type=int, help="S3 part uploads in flight per upload."
)
@click.option(
    "--s3-tails",
    default="auto",
    type=click.Choice(["auto", "redis", "s3"]),
    help="Where the bytes of a part not yet full wait: Redis (auto, with --redis-url) or S3.",
)
@click.option(
    "--s3-direct/--no-s3-direct",
    default=False,
    help="Also serve the routes @uppy/aws-s3 calls with companionEndpoint: browsers PUT "
    "presigned multipart parts straight to the bucket (docs/direct-s3.md). S3 store only.",
)
@click.option(
    "--s3-direct-path",
    default=None,
    help="Path of the direct-to-S3 routes (default <base-path>s3; Uppy's companionEndpoint is "
    "this without the trailing /s3).",
)
@click.option(
    "--s3-direct-presign-expiry",
    default="15m",
    callback=_duration,
    help="How long a presigned part URL or POST form stays valid (at most 7d).",
)
@click.option(
    "--s3-sse",
    default=None,
    type=click.Choice(["AES256", "aws:kms"]),
    help="Server-side encryption of every object the store writes (default: the bucket's).",
)
@click.option(
    "--s3-sse-kms-key-id",
    default=None,
    help="With --s3-sse aws:kms: the KMS key (id, ARN or alias; default: the AWS managed key).",
)
@click.option(
    "--s3-storage-class",
    default=None,
    help="Storage class of every object the store writes, e.g. STANDARD_IA, INTELLIGENT_TIERING "
    "(default: the bucket's).",
)
@click.option(
    "--s3-max-parts",
    default=10000,
    type=int,
    help="Parts one multipart upload may have (S3: 10,000; Scaleway: 1,000); the part size grows "
    "to fit.",
)
@click.option(
    "--s3-min-part-size",
    default="5MiB",
    callback=_size,
    help="The smallest part (but the last) the provider accepts; parts are at least this.",
)
@click.option(
    "--s3-key-template",
    default="",
    help="Object key of each upload, from {prefix} {id} {yyyy} {mm} {dd} {hh} (UTC creation "
    "time), e.g. '{prefix}{yyyy}/{mm}/{id}'; must start with {prefix} and hold {id}. Default: "
    "prefix + id. A pre-create hook's ChangeFileInfo.Storage.Key wins.",
)
@click.option(
    "--s3-allowed-buckets",
    default="",
    callback=_comma_list,
    help="Comma-separated buckets besides --s3-bucket that a pre-create hook may place uploads "
    "in (ChangeFileInfo.Storage.Bucket); same credentials, endpoint and region.",
)
@click.option(
    "--s3-ca-bundle",
    default=None,
    help="PEM file of the CAs to trust for an https:// S3 endpoint (else AWS_CA_BUNDLE, else "
    "the system's CAs).",
)
@click.option(
    "--s3-addressing-style",
    default="auto",
    type=click.Choice(["auto", "path", "virtual"]),
    help="Bucket in the host name (virtual) or in the path: auto is virtual on AWS, path with "
    "--s3-endpoint.",
)
@click.option(
    "--s3-checksum",
    default="auto",
    type=click.Choice(["auto", "off", "sha256"]),
    help="S3's own checksum on every part and object (S3 verifies each part, the object keeps "
    "it): auto is sha256 on AWS and off with --s3-endpoint.",
)
@click.option(
    "--s3-download",
    default="proxy",
    type=click.Choice(["proxy", "redirect"]),
    help="GET of a finished upload: streamed through the server (proxy), or a 302 to a "
    "presigned S3 URL (redirect).",
)
@click.option(
    "--s3-download-expiry",
    default="5m",
    callback=_duration,
    help="How long a presigned download URL of --s3-download redirect stays valid.",
)
@click.option(
    "--azure-container",
    default=None,
    help="Store uploads in this Azure Blob Storage container instead of local files (created "
    "if missing; credentials from AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and "
    "AZURE_STORAGE_KEY).",
)
@click.option(
    "--azure-endpoint",
    default=None,
    help="Azure blob service URL (default https://<account>.blob.core.windows.net; Azurite: "
    "http://127.0.0.1:10000/devstoreaccount1).",
)
@click.option("--azure-prefix", default="", help="Name prefix for blobs in the container.")
@click.option(
    "--azure-blob-access-tier",
    default=None,
    type=click.Choice(["hot", "cool", "cold", "archive"]),
    help="Access tier set on a blob once its upload finishes (default: the account's).",
)
@click.option(
    "--workers",
    default="1",
    callback=_workers,
    help="Processes serving the port, to use several cores ('auto' = one per core). Without "
    "--redis-url they share the upload directory through lock files (file store only).",
)
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level.",
)
@click.option(
    "--log-format",
    default="text",
    type=click.Choice(["text", "json"]),
    help="Log lines as text or as one JSON object per line.",
)
@click.option("--metrics/--no-metrics", default=True, help="Serve Prometheus metrics.")
@click.option("--metrics-path", default="/metrics", help="Path of the Prometheus metrics.")
@click.option("--demo/--no-demo", default=False, help="Serve the upload demo page at /.")
@click.option(
    "--hooks-http", default=None, help="POST hook events as JSON to this URL (tusd's format)."
)
@click.option(
    "--hooks-dir",
    default=None,
    help="Run the executable named after each hook event in this directory (tusd's file hooks).",
)
@click.option(
    "--hooks-enabled-events",
    default="pre-create,post-create,post-receive,post-terminate,post-finish",
    callback=_hook_events,
    help="Comma-separated hook events sent to --hooks-http or --hooks-dir ('' = none; "
    "pre-finish, pre-terminate and pre-access are off unless listed).",
)
@click.option(
    "--hooks-http-retry",
    default=3,
    type=int,
    help="Retries of a hook request after a network error or a 5xx answer.",
)
@click.option(
    "--hooks-http-backoff", default="1s", callback=_duration, help="Wait between hook retries."
)
@click.option(
    "--hooks-http-timeout",
    default="15s",
    callback=_duration,
    help="Give up on one hook request (or a --hooks-dir hook's run) after this long.",
)
@click.option(
    "--hooks-http-forward-headers",
    default="",
    callback=_comma_list,
    help="Comma-separated client request headers copied onto hook requests.",
)
@click.option(
    "--progress-hooks-interval",
    default="1s",
    callback=_duration,
    help="How often post-receive runs while a request body arrives.",
)
@click.option(
    "--hooks-post-workers",
    default=16,
    type=click.IntRange(min=1),
    help="post-* hook deliveries in flight at once, each on its own connection.",
)
@click.option(
    "--hooks-post-queue-size",
    default=10000,
    type=click.IntRange(min=1),
    help="post-* hook events waiting for a worker; events beyond it are dropped and counted.",
)
@click.option(
    "--hooks-post-drain-timeout",
    default="10s",
    callback=_duration,
    help="On shutdown, keep delivering queued post-* hook events this long, then drop them.",
)
@click.version_option(package_name="tusd-py", prog_name="tusd-py")
def main(**options: Any) -> None:
    """Run a tus resumable-upload server."""
    cors = options.pop("cors_origins")
    options["cors_origins"] = [o.strip() for o in cors.split(",") if o.strip()]
    options["cors_allow_credentials"] = options.pop("cors_credentials")
    with refused_configuration():
        config = Config(**options)
        # Config sees only values that differ from the defaults; here an option given
        # explicitly (even with its default value) counts too.
        check_store_options(config, given_options(click.get_current_context()))
    run(config)


def given_options(ctx: click.Context) -> set[str]:
    """The options set on the command line or through their TUSD_* variable."""
    explicit = {click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT}
    return {
        param.name
        for param in ctx.command.params
        if param.name and ctx.get_parameter_source(param.name) in explicit
    }


@contextlib.contextmanager
def refused_configuration() -> Iterator[None]:
    """A ValueError from building the configuration or the app (two stores chosen, a part size
    out of range, ...) is one line on stderr and exit status 2."""
    try:
        yield
    except ValueError as exc:
        click.echo(f"tusd-py: error: {exc}", err=True)
        sys.exit(2)


# --help shows each option's TUSD_* variable beside its default.
for _param in main.params:
    if isinstance(_param, click.Option) and _param.name != "version":
        _param.show_envvar = True


def raise_open_file_limit() -> None:
    """Raise the soft limit on open files to the hard limit, as Go servers do by default.

    Each connection is a file descriptor; the common soft limit of 1024 would let a thousand idle
    clients lock everyone else out of `accept()`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        logging.getLogger("tusd_py").warning("could not raise the open file limit: %s", exc)


def build_server(config: Config, app: Starlette) -> _Server:
    """uvicorn serving `app` as `config` says (the caller passes the listening socket)."""
    uv_config = uvicorn.Config(
        app,
        http=http_protocol(config.header_timeout, config.max_header_size),
        # uvloop when installed (uvicorn[standard] brings it): the event loop is most of the CPU
        # a request costs; "auto" would pick it too, this says so.
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        log_level=config.log_level,
        log_config=None,  # uvicorn's loggers propagate to ours: one format for every line
        access_log=False,  # ObserveMiddleware writes the one access line of every request
        timeout_graceful_shutdown=30,
        timeout_keep_alive=config.keep_alive_timeout,  # type: ignore[arg-type]  # a float works
        h11_max_incomplete_event_size=config.max_header_size,
        # uvicorn trusts X-Forwarded-For/-Proto from 127.0.0.1 by default: without a proxy in
        # front, any local client could then choose its address (hooks' RemoteAddr) and scheme.
        proxy_headers=config.behind_proxy,
        forwarded_allow_ips="*" if config.behind_proxy else None,
    )
    server = _Server(uv_config)
    server.tus = app.state.tus
    server.announce = []
    return server


def run(config: Config) -> None:
    configure_logging(config.log_format, config.log_level)
    with refused_configuration():
        check_redis(config)
        app = create_app(config)
    store = app.state.tus.store
    if store.shared_medium and config.state_kind == "local":
        logging.getLogger("tusd_py").warning(
            "%s storage without --redis-url keeps upload state in this process: "
            "run a single instance, or add Redis to scale out",
            store.storage_type,
        )
    if not any(getattr(config, option) for option, _, _ in STORES):
        with refused_configuration():
            check_upload_dir(config.upload_dir)
    # Bind and listen here, last of the checks, so that --port 0 knows its port for the
    # start-up line (printed by _Server once it serves) and a busy port fails before anything
    # else starts.
    with refused_configuration():
        sock = listening_socket(config.host, config.port)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}{config.base_path}"
    announce = [announcement(f"tusd-py listening on {url}", config.log_format, url=url)]
    if config.demo:
        demo = f"http://{shown_host}:{port}/"
        announce.append(announcement(f"tusd-py demo page at {demo}", config.log_format, url=demo))
    if config.workers > 1:
        del app  # each worker builds its own
        sys.exit(supervise(config, sock, announce))
    raise_open_file_limit()
    server = build_server(config, app)
    server.announce = announce
    server.run(sockets=[sock])
    sys.exit(0 if server.started else 1)


def worker_main() -> None:
    """One worker under `--workers` (started by supervisor.py): the configuration as JSON on
    stdin, the listening socket and the pipe to say "serving" on as inherited fds."""
    # Ignored until the file locker listens for release requests: never a reason to die.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    sock_fd, ready_fd = worker_fds()
    config = Config(**json.load(sys.stdin))
    configure_logging(config.log_format, config.log_level)
    _stop_when_orphaned()
    with refused_configuration():
        app = create_app(config)
    raise_open_file_limit()
    server = build_server(config, app)

    def serving() -> None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)

    server.on_ready = serving
    server.run(sockets=[socket.socket(fileno=sock_fd)])
    sys.exit(0 if server.started else 1)


def _stop_when_orphaned() -> None:
    """SIGTERM ourselves, a graceful shutdown, once the supervisor is gone (SIGKILLed, say)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="tusd-parent-watch", daemon=True).start()


if __name__ == "__main__":
    main()
