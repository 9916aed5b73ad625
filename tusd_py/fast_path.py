"""The tus endpoint's requests, served without Starlette's router around them.

A profile of a HEAD with local state spent about a third of its busy time in the Router, the
Mount and the ExceptionMiddleware wrappers, none of which a tus request needs: the endpoint picks
its own handler and answers every error itself. `TusFastPath` sits inside the app's own
middleware (access log, metrics, CORS: those still run) and hands a request under the tus mount
straight to the endpoint, with the scope a Mount would have given it. Whatever another route may
claim (`/metrics`, `/ready`, the demo, the `--s3-direct` routes under the base path, the bare base
path) still goes through the router, which decides exactly as before.

`TusApp` goes one step further for the tus requests that come without `Origin`: they enter the
fast path from outside Starlette, with only the observing around them.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette._utils import get_route_path
from starlette.applications import Starlette
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

    def claims(self, scope: Scope) -> bool:
        """The request is the endpoint's: under the tus mount, and no other route's."""
        if scope["type"] != "http":
            return False
        route_path = get_route_path(scope)
        return (
            route_path.startswith(self.prefix)
            and route_path not in self.exact
            and not route_path.startswith(self.prefixes)
        )

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand a claimed request to the endpoint, with the scope the Mount would give it."""
        root_path = scope.get("root_path", "")
        scope = {
            **scope,
            "app_root_path": scope.get("app_root_path", root_path),
            "root_path": root_path + self.prefix[:-1],
            "path_params": dict(scope.get("path_params", {})),
            "endpoint": self.endpoint,
        }
        await self.endpoint(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.claims(scope):
            await self.serve(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class TusApp(Starlette):
    """The Starlette app, with a door in front for the tus requests that need none of it.

    A tus request without `Origin` (every client but a browser's) needs from the middleware only
    the observing (request id, metrics, access line) and, with CORS on, the `Vary: Origin` the
    CORS middleware would add: `front_door` is that observing around the fast path's `serve`, and
    such requests skip Starlette's error middleware, the CORS middleware and their send wrappers
    (~8 µs of a HEAD's ~85 on uvicorn). Everything else (browsers, other routes, lifespan)
    goes through the whole stack as before."""

    fast_path: TusFastPath | None = None
    front_door: ASGIApp | None = None
    cors: bool = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast_path, front_door = self.fast_path, self.front_door
        if (
            fast_path is not None
            and front_door is not None
            and fast_path.claims(scope)
            and not (self.cors and _has_origin(scope))
        ):
            scope["app"] = self  # as Starlette's own __call__ sets it
            await front_door(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _has_origin(scope: Scope) -> bool:
    return any(name == b"origin" for name, _ in scope["headers"])
