"""The tus endpoint's requests, served without Starlette's router around them.

A profile of a HEAD with local state spent about a third of its busy time in the Router, the
Mount and the ExceptionMiddleware wrappers, none of which a tus request needs: the endpoint picks
its own handler and answers every error itself. `TusFastPath` sits inside the app's own
middleware (access log, metrics, CORS: those still run) and hands a request under the tus mount
straight to the endpoint, with the scope a Mount would have given it. Whatever another route may
claim (`/metrics`, `/ready`, the demo, the `--s3-direct` routes under the base path, the bare base
path) still goes through the router, which decides exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send


class TusFastPath:
    def __init__(
        self,
        app: ASGIApp,
        *,
        endpoint: ASGIApp,
        mount_path: str,
        routes_before: Sequence[BaseRoute],
    ) -> None:
        """`endpoint` is what `Mount(mount_path, app=endpoint)` serves; `routes_before` are the
        routes the router tries before that mount."""
        self.app = app
        self.endpoint = endpoint
        self.prefix = mount_path + "/"
        exact: set[str] = set()
        prefixes: list[str] = []
        for route in routes_before:
            path: str = getattr(route, "path", "")
            if "{" in path:
                prefixes.append(path.split("{", 1)[0])  # the router matches the parameters
            elif isinstance(route, Mount):
                exact.add(path)
                prefixes.append(path + "/")
            elif isinstance(route, Route):
                exact.add(path)
            else:
                prefixes.append("")  # a kind of route we cannot reason about: the router decides
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route_path = get_route_path(scope)
            if (
                route_path.startswith(self.prefix)
                and route_path not in self.exact
                and not route_path.startswith(self.prefixes)
            ):
                root_path = scope.get("root_path", "")
                scope = {
                    **scope,
                    "app_root_path": scope.get("app_root_path", root_path),
                    "root_path": root_path + self.prefix[:-1],
                    "path_params": dict(scope.get("path_params", {})),
                    "endpoint": self.endpoint,
                }
                await self.endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)
