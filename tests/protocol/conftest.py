"""The protocol suite runs in-process against every store/state combination.

`tus_factory(**config)` builds `create_app(Config(...))` for the current backend, runs its
lifespan and gives an `httpx.AsyncClient` on it; `server` and `client` are the default instance.
A backend is a list of config parts (one function each): adding a combination is one line in
`BACKENDS`. The Redis, S3 and Azure parts start their session servers only when a test needs
them.
"""

from __future__ import annotations

import asyncio
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

from tests.support.azurite import unique_container
from tests.support.s3_client import new_bucket, s3_client
from tusd_py.app import create_app
from tusd_py.config import Config
from tusd_py.protocol.context import TusContext
from tusd_py.stores.memory import MemoryStore

ConfigPart = Callable[[pytest.FixtureRequest], dict[str, Any]]


def local_state(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {}


def redis_state(request: pytest.FixtureRequest) -> dict[str, Any]:
    server = request.getfixturevalue("redis")
    return {"redis_url": server.url, "redis_prefix": f"t{uuid.uuid4().hex[:16]}"}


def redis_cluster_state(request: pytest.FixtureRequest) -> dict[str, Any]:
    servers = request.getfixturevalue("redis_cluster")
    return {
        "redis_url": servers.url,
        "redis_cluster": True,
        "redis_prefix": f"t{uuid.uuid4().hex[:16]}",
    }


def s3_storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    server = request.getfixturevalue("s3")
    # A fresh botocore session loads the S3 service model again (~0.1 s); one per run is enough.
    request.getfixturevalue("monkeypatch").setattr(
        "tusd_py.stores.s3.client.get_session", _shared_aiobotocore_session
    )
    bucket = new_bucket(server)
    return {"s3_bucket": bucket, "s3_endpoint": server.endpoint, "s3_region": "us-east-1"}


def s3_tls_storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    """S3 over HTTPS (moto with the session CA's certificate), verified against that CA."""
    server = request.getfixturevalue("s3_tls")
    request.getfixturevalue("monkeypatch").setattr(
        "tusd_py.stores.s3.client.get_session", _shared_aiobotocore_session
    )
    bucket = new_bucket(server)
    return {
        "s3_bucket": bucket,
        "s3_endpoint": server.endpoint,
        "s3_region": "us-east-1",
        "s3_ca_bundle": server.ca_bundle,
    }


def s3_checksum_storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    """S3 with its own SHA-256 checksums on every part and object (`--s3-checksum sha256`)."""
    return {**s3_storage(request), "s3_checksum": "sha256"}


def azure_storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    server = request.getfixturevalue("azurite")
    request.getfixturevalue("monkeypatch").setenv(
        "AZURE_STORAGE_CONNECTION_STRING", server.connection_string
    )
    return {"azure_container": unique_container(), "azure_endpoint": server.endpoint}


def memory_storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    # The memory store has no option of its own (it is not in the CLI's store table): it takes
    # the default's place, so each app gets its own, as it gets its own upload directory.
    request.getfixturevalue("monkeypatch").setattr(
        "tusd_py.app.DEFAULT_STORE", ("tusd_py.stores.memory", "MemoryStore")
    )
    return {}


BACKENDS: dict[str, tuple[ConfigPart, ...]] = {
    "memory-local": (memory_storage, local_state),
    "file-local": (local_state,),
    "file-redis": (redis_state,),
    "s3-local": (s3_storage, local_state),
    "s3-redis": (s3_storage, redis_state),
    "file-rediscluster": (redis_cluster_state,),
    "s3-rediscluster": (s3_storage, redis_cluster_state),
    "s3tls-redis": (s3_tls_storage, redis_state),
    "s3sum-redis": (s3_checksum_storage, redis_state),
    "azure-local": (azure_storage, local_state),
    "azure-redis": (azure_storage, redis_state),
}


# Tests that hold only on stores that commit late (files every 4 MiB or second, S3 per part): they
# expect a body that runs past the upload's length, or is refused part-way, to leave the offset
# where it was, which the store contract does not promise. The memory store commits each chunk,
# and keeps the bytes that fit. They run on every other backend.
LATE_COMMITS_ONLY = {
    "test_chunked_bytes_beyond_the_length_are_413_and_change_nothing",
    "test_a_body_refused_for_its_framing_commits_nothing",
    "test_requests_for_other_uploads_are_not_held_up",
}


# S3 over HTTPS runs the modules where TLS changes what goes over the wire (part bodies signed
# or Content-MD5, checksums, streamed downloads, multipart aborts), not the whole suite: on
# every module it would add about ten minutes to the run.
TLS_MODULES = {
    "test_patch.py",
    "test_download.py",
    "test_head.py",
    "test_delete.py",
    "test_checksum.py",
}


# S3 with its own checksums runs the modules that create, write, complete and concatenate
# objects every way the store does (segments, deferred lengths, UploadPartCopy, resumes).
CHECKSUM_MODULES = {
    "test_patch.py",
    "test_create.py",
    "test_checksum.py",
    "test_concatenation.py",
    "test_download.py",
    "test_head.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def applies(item: pytest.Item) -> bool:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend", "") if callspec else ""
        name = getattr(item, "originalname", item.name)
        if backend.startswith("s3tls") and item.path.name not in TLS_MODULES:
            return False
        if backend.startswith("s3sum") and item.path.name not in CHECKSUM_MODULES:
            return False
        return not (backend.startswith("memory") and name in LATE_COMMITS_ONLY)

    kept = [item for item in items if applies(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if not applies(item)])
        items[:] = kept


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
        if isinstance(self.ctx.store, MemoryStore):
            return {f"{i}{suffix}" for i in self.ctx.store.uploads for suffix in ("", ".info")}
        if self.config.s3_bucket:
            s3 = s3_client(self.config.s3_endpoint or "", self.config.s3_ca_bundle)
            bucket = self.config.s3_bucket
            objects = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
            multipart = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            return {o["Key"] for o in objects} | {f"multipart:{u['Key']}" for u in multipart}
        if self.config.azure_container:
            from azure.storage.blob import ContainerClient

            connection = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
            container = ContainerClient.from_connection_string(
                connection, self.config.azure_container
            )
            with container:
                if not container.exists():
                    return set()
                return {n for n in container.list_blob_names() if not n.startswith(".")}
        # The file store's index (.index/, empty entries per upload) is not an upload's.
        return {n for n in os.listdir(self.config.upload_dir) if not n.startswith(".")}


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
    if backend.startswith("s3tls"):
        # A TLS connection that aiohttp closed (rather than aborted) shuts down in the
        # background, waiting for moto's close_notify; the test's event loop must live until
        # it has, or the socket is left for the garbage collector (a ResourceWarning later).
        await asyncio.sleep(0.3)


@pytest.fixture
async def server(tus_factory: TusFactory) -> TusServer:
    return await tus_factory()


@pytest.fixture
def client(server: TusServer) -> httpx.AsyncClient:
    return server.client
