from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import httpx

TUS = {"Tus-Resumable": "1.0.0"}


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


async def create(client: httpx.AsyncClient, length: int, **headers: str) -> httpx.Response:
    return await client.post("/files/", headers={**TUS, "Upload-Length": str(length), **headers})


async def patch(
    client: httpx.AsyncClient, url: str, offset: int, data: bytes | AsyncIterator[bytes]
) -> httpx.Response:
    headers = {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    return await client.patch(url, headers=headers, content=data)


async def slow_body(chunks: int, size: int, pause: float) -> AsyncIterator[bytes]:
    for _ in range(chunks):
        yield b"x" * size
        await asyncio.sleep(pause)
