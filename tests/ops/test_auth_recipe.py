"""The auth recipe (examples/auth.py, shown in docs/auth.md) works as documented."""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.ops.helpers import TUS
from tusd_py import Config, create_app

REPO = Path(__file__).resolve().parents[2]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("auth_example", REPO / "examples/auth.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("auth_example", module)
    spec.loader.exec_module(module)
    return module


auth = load_example()
SECRET = b"test secret, 32 bytes or more...."


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    tus = create_app(
        Config(upload_dir=str(tmp_path)), hooks={"pre-create": auth.signed_creation(SECRET)}
    )
    app = auth.BearerAuth(tus, check={"good-token": "ana"}.get)
    async with tus.router.lifespan_context(tus):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tus.test") as c:
            yield c


def bearer(token: str = "good-token") -> dict[str, str]:
    return {**TUS, "Authorization": f"Bearer {token}"}


async def test_every_tus_request_needs_a_token(client: httpx.AsyncClient) -> None:
    url = auth.signed_url(SECRET, "/files/")
    missing = await client.post(url, headers={**TUS, "Upload-Length": "1"})
    wrong = await client.post(url, headers={**bearer("bad"), "Upload-Length": "1"})
    head = await client.head("/files/anything", headers=TUS)
    assert missing.status_code == wrong.status_code == head.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="uploads"'


async def test_preflight_and_probes_need_none(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        "/files/",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code in (200, 204)
    assert (await client.get("/health")).status_code == 200


async def test_a_signed_url_creates_and_the_owner_is_recorded(client: httpx.AsyncClient) -> None:
    url = auth.signed_url(SECRET, "/files/")
    created = await client.post(
        url, headers={**bearer(), "Upload-Length": "3", "X-Forwarded-User": "ana"}
    )
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert "signature" not in location
    head = await client.head(location, headers=bearer())
    assert head.status_code == 200
    assert "owner YW5h" in head.headers["Upload-Metadata"]  # base64("ana")
    patched = await client.patch(
        location,
        headers={
            **bearer(),
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        content=b"abc",
    )
    assert patched.status_code == 204


@pytest.mark.parametrize("problem", ["unsigned", "tampered", "expired", "other-path"])
async def test_bad_signed_urls_are_refused(client: httpx.AsyncClient, problem: str) -> None:
    signed = auth.signed_url(SECRET, "/files/")
    expired = int(time.time()) - 1
    url = {
        "unsigned": "/files/",
        "tampered": signed[:-1] + ("1" if signed.endswith("0") else "0"),
        "expired": f"/files/?expires={expired}&signature="
        + auth.sign(SECRET, "POST", "/files/", expired),
        "other-path": "/files/?" + auth.signed_url(SECRET, "/elsewhere/").split("?", 1)[1],
    }[problem]
    response = await client.post(url, headers={**bearer(), "Upload-Length": "1"})
    assert response.status_code == 403, response.text


def test_the_docs_show_the_example_verbatim() -> None:
    docs = (REPO / "docs/auth.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", docs, flags=re.DOTALL)
    assert (REPO / "examples/auth.py").read_text(encoding="utf-8") in blocks
