"""The app in-process: `create_app(config)` started (its lifespan) behind an httpx client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx

from tusd_py.app import create_app
from tusd_py.config import Config

StoreT = TypeVar("StoreT")


@contextlib.asynccontextmanager
async def app_client(config: Config, **app_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a started `create_app(config, **app_options)`; `client.app` is the app."""
    app = create_app(config, **app_options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tus.test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def store_of(client: httpx.AsyncClient, kind: type[StoreT]) -> StoreT:
    """The store of the app behind `client` (from `app_client`), which must be a `kind`."""
    store = client.app.state.tus.store  # type: ignore[attr-defined]
    assert isinstance(store, kind), f"the app's store is a {type(store).__name__}, not a {kind}"
    return store
