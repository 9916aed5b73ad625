"""The protocol suite runs in-process against every store/state combination.

`tus_factory(**config)` builds `create_app(Config(...))` for the current backend, runs its
lifespan and gives an `httpx.AsyncClient` on it; `server` and `client` are the default instance.
A backend is a list of config parts (one function each): adding a combination is one line in
`BACKENDS`. The Redis and S3 parts start their session servers only when a test needs them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from tests.support.s3_client import new_bucket, s3_client
from tusd_py.app import create_app
from tusd_py.config import Config
from tusd_py.protocol.context import TusContext

ConfigPart = Callable[[pytest.FixtureRequest], dict[str, Any]]


def local_state(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {}


def redis_state(request: pytest.FixtureRequest) -> dict[str, Any]:
    server = request.getfixturevalue("redis")
    return {"redis_url": server.url, "redis_prefix": f"t{uuid.uuid4().hex[:16]}"}


def s3_storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    server = request.getfixturevalue("s3")
    # A fresh botocore session loads the S3 service model again (~0.1 s); one per run is enough.
    request.getfixturevalue("monkeypatch").setattr(
        "tusd_py.stores.s3.get_session", _shared_aiobotocore_session
    )
    bucket = new_bucket(server)
    return {"s3_bucket": bucket, "s3_endpoint": server.endpoint, "s3_region": "us-east-1"}


BACKENDS: dict[str, tuple[ConfigPart, ...]] = {
    "file-local": (local_state,),
    "file-redis": (redis_state,),
    "s3-local": (s3_storage, local_state),
    "s3-redis": (s3_storage, redis_state),
}


@functools.cache
def _shared_aiobotocore_session() -> Any:
    from aiobotocore.session import get_session

    return get_session()


@dataclass
class TusServer:
    """One running app; its client talks to it directly or through the parent that mounts it."""

    app: Starlette
    client: httpx.AsyncClient
    config: Config
    backend: str

    @property
    def ctx(self) -> TusContext:
        ctx: TusContext = self.app.state.tus
        return ctx

    def stored_names(self) -> set[str]:
        """Everything the data store holds: files, or objects and unfinished multipart uploads."""
        if self.config.s3_bucket:
            s3 = s3_client(self.config.s3_endpoint or "")
            bucket = self.config.s3_bucket
            objects = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
            multipart = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            return {o["Key"] for o in objects} | {f"multipart:{u['Key']}" for u in multipart}
        return set(os.listdir(self.config.upload_dir))


class TusFactory:
    def __init__(
        self,
        request: pytest.FixtureRequest,
        backend: str,
        tmp_path: Path,
        stack: contextlib.AsyncExitStack,
    ) -> None:
        self._request = request
        self._backend = backend
        self._tmp_path = tmp_path
        self._stack = stack
        self._count = 0

    async def __call__(
        self,
        *,
        mount: str | None = None,
        base_url: str = "http://testserver",
        **overrides: Any,
    ) -> TusServer:
        """A started app for this backend; `mount` puts it inside a parent Starlette app."""
        self._count += 1
        upload_dir = self._tmp_path / f"uploads{self._count}"
        settings: dict[str, Any] = {"upload_dir": str(upload_dir)}
        for part in BACKENDS[self._backend]:
            settings.update(part(self._request))
        settings.update(overrides)
        config = Config(**settings)
        app = create_app(config)
        asgi: ASGIApp = app if mount is None else Starlette(routes=[Mount(mount, app=app)])
        await self._stack.enter_async_context(app.router.lifespan_context(app))
        client = await self._stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url=base_url)
        )
        return TusServer(app, client, config, self._backend)


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def tus_factory(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> AsyncIterator[TusFactory]:
    async with contextlib.AsyncExitStack() as stack:
        yield TusFactory(request, backend, tmp_path, stack)


@pytest.fixture
async def server(tus_factory: TusFactory) -> TusServer:
    return await tus_factory()


@pytest.fixture
def client(server: TusServer) -> httpx.AsyncClient:
    return server.client
