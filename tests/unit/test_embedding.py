"""Embedding: `create_app(config, store=...)` serves uploads from a store the caller built."""

from __future__ import annotations

import httpx

from tusd_py import Config, MemoryStore, create_app


async def test_create_app_takes_a_store() -> None:
    store = MemoryStore()
    app = create_app(Config(), store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            created = await client.post(
                "/files/",
                headers={
                    "Tus-Resumable": "1.0.0",
                    "Upload-Length": "3",
                    "Content-Type": "application/offset+octet-stream",
                },
                content=b"abc",
            )
            assert created.status_code == 201, created.text
            assert (await client.get(created.headers["Location"])).content == b"abc"
    assert list(store.uploads) == [created.headers["Location"].rsplit("/", 1)[1]]
