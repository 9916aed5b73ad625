"""In-process apps with a real HTTP hook receiver next to them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tusd_py.app import create_app
from tusd_py.config import Config

ALL_EVENTS = [
    "pre-create",
    "post-create",
    "post-receive",
    "pre-finish",
    "post-finish",
    "pre-terminate",
    "post-terminate",
]


AppFactory = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def tus_app(tmp_path: Path) -> AppFactory:
    """`async with tus_app(hooks=..., **config) as client`: the app with its lifespan running."""

    @contextlib.asynccontextmanager
    async def start(hooks: Any = None, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
        options.setdefault("upload_dir", str(tmp_path / "uploads"))
        options.setdefault("hooks_http_backoff", 0.01)
        app: Starlette = create_app(Config(**options), hooks=hooks)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://tus.test") as client:
                yield client

    return start
