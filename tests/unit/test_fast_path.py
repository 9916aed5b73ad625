"""TusFastPath: tus requests skip the router; every other route answers exactly as before."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from tusd_py import Config, MemoryStore, create_app
from tusd_py.fast_path import TusApp, TusFastPath

TUS = {"Tus-Resumable": "1.0.0"}
CREATE = {**TUS, "Upload-Length": "3", "Content-Type": "application/offset+octet-stream"}


def endpoint_calls(app: TusApp) -> tuple[list[str], list[str]]:
    """Paths that the fast path handed to the endpoint from now on: through the front door, and
    through the middleware stack (requests with `Origin`, for the CORS middleware)."""
    app.middleware_stack = app.build_middleware_stack()  # else built on the first request
    layer: Any = app.middleware_stack
    while not isinstance(layer, TusFastPath):
        layer = layer.app
    assert app.fast_path is not None
    return counted_endpoint(app.fast_path), counted_endpoint(layer)


def counted_endpoint(fast_path: TusFastPath) -> list[str]:
    calls: list[str] = []
    endpoint = fast_path.endpoint

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await endpoint(scope, receive, send)

    fast_path.endpoint = counted
    return calls


async def test_tus_requests_take_the_fast_path_and_other_routes_the_router() -> None:
    app = create_app(Config(base_path="/files/", demo=True), store=MemoryStore())
    assert isinstance(app, TusApp)
    calls, through_stack = endpoint_calls(app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            created = await client.post("/files/", headers=CREATE, content=b"abc")
            assert created.status_code == 201, created.text
            location = created.headers["Location"]
            assert location.startswith("http://t/files/")
            head = await client.head(location, headers=TUS)
            assert head.headers["Upload-Offset"] == "3"
            missing = await client.head("/files/nope", headers=TUS)
            assert missing.status_code == 404
            assert missing.headers["Tus-Resumable"] == "1.0.0"  # a tus answer, not Starlette's
            assert len(calls) == 3

            # The bare base path, /metrics, /ready, /health and the demo: the router, as before.
            bare = await client.post("/files", headers=CREATE, content=b"xyz")
            assert bare.status_code == 201
            assert bare.headers["Location"].startswith("http://t/files/")
            assert (await client.get("/metrics")).status_code == 200
            assert (await client.get("/health")).text == "ok\n"
            assert (await client.get("/ready")).status_code == 200
            assert (await client.get("/")).status_code == 200  # the demo page
            elsewhere = await client.get("/elsewhere")
            assert elsewhere.status_code == 404
            assert "Tus-Resumable" not in elsewhere.headers
            assert len(calls) == 3
            assert through_stack == []

            # A browser's request (with Origin) takes the whole stack: CORS answers it.
            origin = {**TUS, "Origin": "https://app.example"}
            browser = await client.head(location, headers=origin)
            assert browser.headers["Upload-Offset"] == "3"
            assert browser.headers["Access-Control-Allow-Origin"] == "*"
            assert len(through_stack) == 1 and len(calls) == 3
            # Without it, the front door adds the Vary the CORS middleware would have added.
            assert head.headers["Vary"] == "Origin"
            assert "Access-Control-Allow-Origin" not in head.headers
            assert head.headers["X-Request-ID"]


async def test_mounted_in_another_app_the_locations_follow_the_mount() -> None:
    inner = create_app(Config(), store=MemoryStore())
    outer = Starlette(routes=[Mount("/uploads", app=inner)])
    async with inner.router.lifespan_context(inner):
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            created = await client.post("/uploads/files/", headers=CREATE, content=b"abc")
            assert created.status_code == 201, created.text
            location = created.headers["Location"]
            assert location.startswith("http://t/uploads/files/")
            assert (await client.get(location)).content == b"abc"


async def test_without_cors_the_front_door_adds_no_vary() -> None:
    app = create_app(Config(cors_origins=[]), store=MemoryStore())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            created = await client.post(
                "/files/", headers={**CREATE, "Origin": "https://a.b"}, content=b"abc"
            )
            assert created.status_code == 201
            head = await client.head(created.headers["Location"], headers=TUS)
            assert head.headers["Upload-Offset"] == "3"
            assert "Vary" not in head.headers and "Vary" not in created.headers
