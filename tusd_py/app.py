"""`create_app(config)`: the tus server as a Starlette app, also the embedding API."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Mount, Route

from tusd_py import loop_errors
from tusd_py.config import Config
from tusd_py.cors import LoggedCORSMiddleware
from tusd_py.expiry import running_sweep
from tusd_py.fast_path import TusApp, TusFastPath
from tusd_py.hooks import HookFunction, Hooks, HookType
from tusd_py.locking.base import Locker
from tusd_py.locking.memory import MemoryLocker
from tusd_py.ops import observe_middleware, observed, operational_routes
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.endpoint import BareBasePath, TusEndpoint
from tusd_py.state.base import StateStore
from tusd_py.state.local import LocalState
from tusd_py.stores.base import DataStore, FinishedRetainer

# What browser clients (tus-js-client, Uppy) send, and the response headers they must be able to
# read: the tus and IETF draft headers, plus the few a download or a 503 needs.
CORS_ALLOW_HEADERS = [
    "Authorization",
    "Origin",
    "X-Requested-With",
    "X-Request-ID",
    "X-HTTP-Method-Override",
    "Content-Type",
    "Upload-Length",
    "Upload-Offset",
    "Tus-Resumable",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Checksum",
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Draft-Interop-Version",
]
CORS_EXPOSE_HEADERS = [
    "Upload-Offset",
    "Location",
    "Upload-Length",
    "Tus-Version",
    "Tus-Resumable",
    "Tus-Max-Size",
    "Tus-Extension",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Expires",
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Limit",
    "Upload-Draft-Interop-Version",
    "Tus-Checksum-Algorithm",
    "Content-Disposition",
    "Content-Range",
    "Retry-After",
    "X-Request-ID",
]
# PUT: the IETF draft creates uploads by PUT as well as POST and PATCH.
CORS_METHODS = ["POST", "HEAD", "PATCH", "OPTIONS", "GET", "DELETE", "PUT"]


# The store table: each store, the option that selects it, and its module (imported only when
# chosen, so its client library loads only then). With none of the options set, local files.
STORES: tuple[tuple[str, str, str], ...] = (
    ("s3_bucket", "tusd_py.stores.s3", "S3Store"),
    ("azure_container", "tusd_py.stores.azure", "AzureStore"),
)
DEFAULT_STORE = ("tusd_py.stores.file", "FileStore")


def store_class(config: Config) -> type[DataStore]:
    """The store `config` selects; a ValueError when it selects more than one."""
    chosen = [entry for entry in STORES if getattr(config, entry[0])]
    if len(chosen) > 1:
        names = " and ".join("--" + option.replace("_", "-") for option, _, _ in chosen)
        raise ValueError(f"{names} each select a store; choose one")
    module, name = chosen[0][1:] if chosen else DEFAULT_STORE
    cls: type[DataStore] = getattr(importlib.import_module(module), name)
    return cls


def build_store(config: Config) -> DataStore:
    return store_class(config).from_config(config)


def build_state(config: Config, store: DataStore) -> tuple[StateStore, Locker]:
    if config.state_kind == "redis":
        from tusd_py.redis_backends import build_redis_backends

        return build_redis_backends(config, store)
    if config.workers > 1:
        # Other workers change uploads behind this process's back: no info cache (each read
        # goes to the `.info`/`.progress`), and locks every worker sees.
        from tusd_py.locking.file import FileLocker

        locks = FileLocker(Path(config.upload_dir) / ".locks", config.lock_acquire_timeout)
        return LocalState(store, cache_bytes=0), locks
    state = LocalState(store, cache_bytes=config.local_state_cache)
    return state, MemoryLocker(config.lock_acquire_timeout)


def build_context(config: Config, store: DataStore | None = None) -> TusContext:
    store = store or build_store(config)
    state, locker = build_state(config, store)
    return TusContext(config=config, store=store, state=state, locker=locker)


def check_retention(config: Config, store: DataStore) -> None:
    """A ValueError when `--retain-finished` is set and the store cannot honour it."""
    if config.retain_finished > 0 and not isinstance(store, FinishedRetainer):
        raise ValueError(
            f"--retain-finished is not supported by the {store.storage_type} store: set a "
            "lifecycle rule on the bucket or container instead (docs/storage.md)"
        )


def base_path_routes(mount_path: str, endpoint: TusEndpoint) -> list[BaseRoute]:
    routes: list[BaseRoute] = [Mount(mount_path, app=endpoint)]
    if mount_path:
        routes.insert(0, Route(mount_path, BareBasePath(endpoint, mount_path)))
    return routes


def direct_routes(ctx: TusContext) -> list[BaseRoute]:
    """The direct-to-S3 routes with --s3-direct (imported only then: they need the S3 store)."""
    if not ctx.config.s3_direct:
        return []
    from tusd_py.direct_s3 import direct_s3_routes

    return direct_s3_routes(ctx)


def create_app(
    config: Config | None = None,
    *,
    context: TusContext | None = None,
    hooks: Mapping[HookType | str, HookFunction] | None = None,
    store: DataStore | None = None,
) -> Starlette:
    """The tus server: the endpoint at `config.base_path`, CORS, and store lifecycles.

    Mount it in another Starlette/FastAPI app with `Mount("/uploads", app=create_app(cfg))`;
    `Location` headers follow the mount point. `hooks` maps hook names ("pre-create", ...) to
    Python functions, sync or async (docs/hooks.md). `store` replaces the store the config
    selects (e.g. `MemoryStore()`, or a store of your own: docs/stores.md).
    """
    config = config or Config()
    ctx = context or build_context(config, store)
    check_retention(config, ctx.store)
    if context is None or hooks is not None or config.hooks_http or config.hooks_dir:
        ctx.hooks = Hooks.from_config(config, hooks, describe_storage=ctx.store.describe)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop_errors.install(asyncio.get_running_loop())
        await ctx.store.open()
        await ctx.state.open()
        await ctx.locker.open()
        try:
            async with running_sweep(ctx):
                yield
        finally:
            ctx.stop_all_readers()
            await ctx.hooks.close()
            await ctx.locker.close()
            await ctx.state.close()
            await ctx.store.close()

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    cors = Middleware(
        LoggedCORSMiddleware,
        refusal_log_interval=config.cors_refusal_log_interval,
        allow_origins=config.cors_origins,
        allow_credentials=config.cors_allow_credentials,
        allow_methods=CORS_METHODS,
        allow_headers=CORS_ALLOW_HEADERS,
        expose_headers=CORS_EXPOSE_HEADERS,
        max_age=86400,
    )
    mount_path = config.base_path.rstrip("/")
    endpoint = TusEndpoint(ctx)
    routes_before = [
        Route("/health", health, methods=["GET"]),
        *operational_routes(config, ctx),
        *direct_routes(ctx),  # before the tus mount, which would take <base>/s3 too
    ]
    tus_routes = base_path_routes(mount_path, endpoint)
    # Innermost, so the access log, metrics and CORS still wrap every tus request.
    claimed_elsewhere = [*routes_before, *tus_routes[:-1]]  # and the bare base path
    fast_path = Middleware(
        TusFastPath, endpoint=endpoint, mount_path=mount_path, routes_before=claimed_elsewhere
    )
    app = TusApp(
        routes=[*routes_before, *tus_routes],
        middleware=[
            observe_middleware(config),
            *([cors] if config.cors_origins else []),
            fast_path,
        ],
        lifespan=lifespan,
    )
    app.fast_path = TusFastPath(
        app.router, endpoint=endpoint, mount_path=mount_path, routes_before=claimed_elsewhere
    )
    app.front_door = observed(app.fast_path.serve, config)
    app.cors = bool(config.cors_origins)
    app.state.tus = ctx
    return app
