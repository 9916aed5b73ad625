"""What `create_app` adds for running in production: request observation, `/ready`,
`/metrics` and the opt-in demo page. Each piece lives in its own module; this one wires them."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from tusd_py.config import Config
from tusd_py.metrics import metrics_endpoint
from tusd_py.observe import ObserveMiddleware
from tusd_py.probes import ready_endpoint
from tusd_py.protocol.context import TusContext

HEALTH_PATH = "/health"
READY_PATH = "/ready"


def operational_routes(config: Config, ctx: TusContext) -> list[BaseRoute]:
    routes: list[BaseRoute] = [Route(READY_PATH, ready_endpoint(ctx), methods=["GET"])]
    if config.metrics:
        routes.append(Route(config.metrics_path, metrics_endpoint, methods=["GET"]))
    if config.demo:
        from tusd_py.demo import demo_routes

        routes += demo_routes(config)
    return routes


def _quiet_paths(config: Config) -> frozenset[str]:
    return frozenset({HEALTH_PATH, READY_PATH, config.metrics_path})


def observe_middleware(config: Config) -> Middleware:
    return Middleware(
        ObserveMiddleware, base_path=config.base_path, quiet_paths=_quiet_paths(config)
    )


def observed(app: ASGIApp, config: Config) -> ObserveMiddleware:
    """`app` observed as the middleware observes the whole app, for a door around the stack:
    with CORS on, it also adds the `Vary: Origin` the CORS middleware would have."""
    return ObserveMiddleware(
        app,
        base_path=config.base_path,
        quiet_paths=_quiet_paths(config),
        vary_on_origin=bool(config.cors_origins),
    )
