"""The creation rate limit recipe (examples/rate_limit.py, shown in docs/deployment.md)."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.ops.helpers import TUS
from tusd_py import Config, create_app
from tusd_py.hooks import HookEvent, HookType, HTTPRequestInfo
from tusd_py.info import UploadInfo

REPO = Path(__file__).resolve().parents[2]


def load_example() -> ModuleType:
    path = REPO / "examples/rate_limit.py"
    spec = importlib.util.spec_from_file_location("rate_limit_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rate_limit_example", module)
    spec.loader.exec_module(module)
    return module


recipe = load_example()
Client = Callable[[str], httpx.AsyncClient]


@pytest.fixture
async def clients(tmp_path: Path) -> AsyncIterator[Client]:
    """`clients(address)`: a client of one app whose requests come from `address`."""
    limit = recipe.CreationLimit(3, 60.0)
    tus = create_app(Config(upload_dir=str(tmp_path)), hooks={"pre-create": limit})
    opened: list[httpx.AsyncClient] = []

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=tus, client=(address, 40000 + len(opened)))
        opened.append(httpx.AsyncClient(transport=transport, base_url="http://testserver"))
        return opened[-1]

    async with tus.router.lifespan_context(tus):
        yield client
        for each in opened:
            await each.aclose()


async def test_creations_past_the_limit_are_429_and_store_nothing(
    clients: Client, tmp_path: Path
) -> None:
    client = clients("203.0.113.7")
    answers = [
        await client.post("/files/", headers={**TUS, "Upload-Length": "1"}) for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    refused = answers[-1]
    assert refused.text == "too many uploads created; retry later\n"
    assert int(refused.headers["Retry-After"]) == 20  # one token per 60 s / 3
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".info")]) == 3
    # Only creations count: the uploads it has go on, and another address is not held back.
    upload = answers[0].headers["Location"]
    assert (await client.head(upload, headers=TUS)).status_code == 200
    other = clients("198.51.100.2")
    assert (await other.post("/files/", headers={**TUS, "Upload-Length": "1"})).status_code == 201


def test_the_proxy_appended_address_is_the_one_counted() -> None:
    limit = recipe.CreationLimit(1, 1.0, behind_proxy=True)
    request = HTTPRequestInfo(headers={"X-Forwarded-For": ["10.9.9.9, 203.0.113.7"]})
    event = HookEvent(HookType.PRE_CREATE, UploadInfo(id="", length=1), request)
    assert limit.address(event) == "203.0.113.7"  # 10.9.9.9 is whatever the client claimed


def test_the_docs_show_the_recipe_itself() -> None:
    deployment = (REPO / "docs/deployment.md").read_text(encoding="utf-8")
    assert (REPO / "examples/rate_limit.py").read_text(encoding="utf-8") in deployment
