"""S3 failures at the two ends of an upload's life, in process with one attempt per S3 call.

Completion that fails after the last byte was committed is retried, never skipped. Found by the
S3 outage scenario: the final PATCH committed the offset, then S3 refused
CompleteMultipartUpload; the PATCH answered 503, the client's HEAD reported offset = length, and
the client, rightly, considered the upload done. The object never existed. Now every request
that touches the upload retries the completion, and HEAD answers 503 until it succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.reliability.backends import MiB, payload
from tests.support.fault_proxy import FaultProxy, Request
from tests.support.s3_client import new_bucket
from tests.support.servers import S3_ENV, S3Server
from tusd_py.app import create_app
from tusd_py.config import Config
from tusd_py.hooks import HookEvent
from tusd_py.locking.memory import MemoryLocker
from tusd_py.protocol.context import TusContext
from tusd_py.state.local import LocalState
from tusd_py.stores.s3 import S3Store

TUS = {"Tus-Resumable": "1.0.0"}


class FailCompletion:
    def __init__(self) -> None:
        self.on = True

    def __call__(self, request: Request) -> str | None:
        completing = request.method == "POST" and "uploadId=" in request.target
        return "503" if self.on and completing else None


class FailObjectReads:
    def __init__(self) -> None:
        self.on = False

    def __call__(self, request: Request) -> str | None:
        reading = request.method == "GET" and not request.target.split("?")[0].endswith(".info")
        return "503" if self.on and reading else None


@contextlib.asynccontextmanager
async def app_on(
    proxy: FaultProxy, bucket: str, finished: list[str]
) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(s3_bucket=bucket, s3_endpoint=proxy.endpoint, s3_region="us-east-1")
    # One attempt per S3 call: the failure reaches the protocol layer at once.
    store = S3Store(
        bucket, endpoint=proxy.endpoint, region=S3_ENV["AWS_DEFAULT_REGION"], max_attempts=1
    )
    ctx = TusContext(config, store, LocalState(store), MemoryLocker(config.lock_acquire_timeout))

    def post_finish(event: HookEvent) -> None:
        finished.append(event.upload.id)

    app = create_app(config, context=ctx, hooks={"post-finish": post_finish})
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        yield client


async def test_a_failed_completion_is_retried_by_head_and_get(s3: S3Server, tmp_path: Path) -> None:
    bucket = new_bucket(s3, "rel")
    data = payload(7, 6 * MiB)
    decide = FailCompletion()
    finished: list[str] = []
    async with (
        FaultProxy("127.0.0.1", s3.port, decide) as proxy,
        app_on(proxy, bucket, finished) as client,
    ):
        created = await client.post("/files/", headers={**TUS, "Upload-Length": str(len(data))})
        assert created.status_code == 201, created.text
        url = created.headers["Location"]

        response = await client.patch(
            url,
            content=data,
            headers={
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert response.status_code == 503, response.text
        assert decide.on and proxy.faults["503"] >= 1

        # The bytes are committed, but the object does not exist: HEAD must not say "done".
        head = await client.head(url, headers=TUS)
        assert head.status_code == 503, dict(head.headers)
        assert "Upload-Offset" not in head.headers
        get = await client.get(url, headers=TUS)
        assert get.status_code == 503, get.text
        assert finished == []

        decide.on = False
        head = await client.head(url, headers=TUS)
        assert head.status_code == 200, head.text
        assert head.headers["Upload-Offset"] == str(len(data))
        get = await client.get(url, headers=TUS)
        assert get.status_code == 200
        assert hashlib.sha256(get.content).digest() == hashlib.sha256(data).digest()
        assert finished == [url.rsplit("/", 1)[-1]]  # post-finish ran once, after completion

        head = await client.head(url, headers=TUS)
        assert head.status_code == 200
        assert len(finished) == 1


async def test_a_download_s3_cannot_start_is_a_503(s3: S3Server, tmp_path: Path) -> None:
    """Not a 200 whose body breaks off before its first byte."""
    bucket = new_bucket(s3, "rel")
    data = payload(8, 100_000)
    decide = FailObjectReads()
    async with (
        FaultProxy("127.0.0.1", s3.port, decide) as proxy,
        app_on(proxy, bucket, []) as client,
    ):
        created = await client.post(
            "/files/",
            content=data,
            headers={
                **TUS,
                "Upload-Length": str(len(data)),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        decide.on = True
        get = await client.get(url, headers=TUS)
        assert get.status_code == 503, get.status_code
        assert get.headers["Retry-After"]
        decide.on = False
        get = await client.get(url, headers=TUS)
        assert get.status_code == 200
        assert get.content == data
