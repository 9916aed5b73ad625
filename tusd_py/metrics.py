"""Prometheus metrics, served at `/metrics`.

The metrics live in prometheus-client's default registry, once per process: several apps in one
process (tests, an app that mounts ours) share them, as they share the process, and the default
process/platform collectors come along. Under `--workers N` every worker writes its values into
the directory in `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode, set up by
workers.py) and `/metrics` from any worker sums them for the host: a scrape of the one port must
not see a different worker's counters each time. Names follow tusd's where they overlap, so its
dashboards need few changes. Hot paths touch them once per request, never per body chunk.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.exposition import generate_latest
from starlette.requests import Request
from starlette.responses import Response

REQUESTS = Counter(
    "tusd_requests", "HTTP requests answered, by method and status.", ["method", "status"]
)
REQUEST_DURATION = Histogram(
    "tusd_request_duration_seconds",
    "Time from request start to the end of the response, by method.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONNECTIONS_OPEN = Gauge(
    "tusd_connections_open",
    "HTTP requests being served right now (an ASGI app sees requests, not sockets).",
    multiprocess_mode="livesum",  # under --workers: the live workers' sum
)
BYTES_RECEIVED = Counter("tusd_bytes_received", "Upload body bytes received from clients.")
UPLOADS_CREATED = Counter("tusd_uploads_created", "Uploads created.")
UPLOADS_FINISHED = Counter("tusd_uploads_finished", "Uploads that received their last byte.")
UPLOADS_TERMINATED = Counter(
    "tusd_uploads_terminated", "Uploads terminated by DELETE or stopped by a hook."
)
UPLOADS_BY_PATH = Counter(
    "tusd_uploads_by_path",
    "Upload events by the path the bytes take (tus through the server; s3-multipart and s3-post "
    "straight to the bucket, docs/direct-s3.md) and event (created, finished, terminated).",
    ["path", "event"],
)
HOOK_INVOCATIONS = Counter("tusd_hook_invocations", "Hooks invoked, by hook.", ["hook"])
HOOK_ERRORS = Counter("tusd_hook_errors", "Hooks that failed, by hook.", ["hook"])
HOOK_DROPPED = Counter(
    "tusd_hook_dropped",
    "post-* hook events dropped undelivered (queue full, or left at shutdown), by hook.",
    ["hook"],
)
HOOK_QUEUED = Gauge(
    "tusd_hook_queued",
    "post-* hook events waiting for a delivery worker.",
    multiprocess_mode="livesum",
)
S3_REQUEST_DURATION = Histogram(
    "tusd_s3_request_duration_seconds",
    "Duration of S3 requests, by operation and outcome (ok or error).",
    ["operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LOCK_WAIT = Histogram(
    "tusd_lock_wait_seconds",
    "Time spent acquiring an upload's lock, by outcome (acquired, locked, error).",
    ["outcome"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30),
)
REDIS_POOL_WAIT = Histogram(
    "tusd_redis_pool_wait_seconds",
    "Time a Redis command waited for a pooled connection (a free one, or a new one connecting).",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REDIS_POOL_EXHAUSTED = Counter(
    "tusd_redis_pool_exhausted",
    "Redis commands given up because no pooled connection became free within the wait.",
)

REDIS_FAILOVERS = Counter(
    "tusd_redis_failovers",
    "Changes of the Redis primary that this instance saw through Sentinel.",
)
REDIS_RECONNECTS = Counter(
    "tusd_redis_reconnects",
    "Redis connections opened again after losing their socket (a restart, a failover, a "
    "network fault); a pool's first connects are not counted.",
)
REDIS_WAIT_TIMEOUTS = Counter(
    "tusd_redis_wait_timeouts",
    "Commits that fewer than --redis-wait-replicas replicas confirmed within "
    "--redis-wait-timeout (the request answered 503).",
)


@functools.cache
def request_metrics(method: str, status: int) -> tuple[Counter, Histogram]:
    """The `REQUESTS` and `REQUEST_DURATION` children of one method and status, looked up once:
    `.labels()` checks its arguments and takes a lock on every call, several µs per request."""
    return REQUESTS.labels(method, str(status)), REQUEST_DURATION.labels(method)


@functools.cache
def lock_wait(outcome: str) -> Histogram:
    """The `LOCK_WAIT` child of one outcome (looked up once, as `request_metrics`)."""
    return LOCK_WAIT.labels(outcome)


def observe_s3_request(operation: str, seconds: float, ok: bool = True) -> None:
    """Record one S3 request, e.g. `observe_s3_request("upload_part", 0.12)`."""
    S3_REQUEST_DURATION.labels(operation, "ok" if ok else "error").observe(seconds)


@contextlib.contextmanager
def s3_request(operation: str) -> Iterator[None]:
    """Time the S3 request in the block: `with s3_request("upload_part"): await s3.upload_part()`.

    An exception leaving the block (after the store's own retries) counts as an error.
    """
    start = time.perf_counter()
    ok = False
    try:
        yield
        ok = True
    finally:
        observe_s3_request(operation, time.perf_counter() - start, ok)


def _registry() -> CollectorRegistry:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    from prometheus_client.multiprocess import MultiProcessCollector

    # Built per scrape, as prometheus-client's documentation does it: the files of workers
    # started since are read too. Process collectors do not apply to a sum of processes.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)
