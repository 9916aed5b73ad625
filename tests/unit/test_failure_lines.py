"""The error line of a 5xx, in process: one line at error level, the traceback at debug only.

The real failures (read-only disk, stopped moto and redis-server) are in
tests/ops/test_failure_logs.py; these cover what no real component is needed for: a failing
hook function and an exception outside the tus endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from tusd_py.app import create_app
from tusd_py.config import Config
from tusd_py.errors import TusError
from tusd_py.failures import cause_of
from tusd_py.hooks import HookEvent
from tusd_py.info import UploadInfo
from tusd_py.logs import RequestIdsFilter
from tusd_py.observe import ObserveMiddleware
from tusd_py.stores.base import Commit
from tusd_py.stores.memory import MemoryStore

TUS = {"Tus-Resumable": "1.0.0"}


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_failing_hook_function_gives_one_error_line_naming_the_hook(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def pre_create(event: HookEvent) -> None:
        raise ValueError("boom")

    app = create_app(Config(upload_dir=str(tmp_path)), hooks={"pre-create": pre_create})
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(RequestIdsFilter())  # what the server's own handler adds
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tus.test") as client:
            response = await client.post(
                "/files/", headers={**TUS, "Upload-Length": "1", "X-Request-ID": "r-1"}
            )
    assert response.status_code == 500
    [record] = error_records(caplog)
    assert record.name == "tusd_py.failures"
    assert record.getMessage() == (
        "POST /files/ answered 500 hook-failed: pre-create hook failed: HookError: ValueError: boom"
    )
    assert record.operation == "pre-create hook"  # type: ignore[attr-defined]
    assert record.request_id == "r-1"  # type: ignore[attr-defined]
    assert record.upload_id is not None  # type: ignore[attr-defined]  # the id it would have had
    assert not record.exc_info
    tracebacks = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert tracebacks, "the traceback is logged at debug level"


async def test_an_exception_outside_the_endpoint_is_one_500_and_one_error_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("the route is broken")

    inner = Router(routes=[Route("/broken", broken)])  # below Starlette's ServerErrorMiddleware
    app = ObserveMiddleware(inner, base_path="/files/", quiet_paths=frozenset())
    caplog.set_level(logging.INFO)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tus.test") as client:
        response = await client.get("/broken", headers={"X-Request-ID": "r-2"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "r-2"
    [record] = error_records(caplog)
    message = record.getMessage()
    assert message.startswith("GET /broken answered 500 internal-error: unexpected RuntimeError")
    assert "the route is broken (at " in message and "in broken)" in message
    assert not record.exc_info
    [access] = [r for r in caplog.records if r.name == "tusd_py.access"]
    assert access.getMessage().startswith("GET /broken 500 ")


def test_the_cause_is_the_exception_an_error_was_raised_from() -> None:
    try:
        try:
            raise OSError(30, "Read-only file system")
        except OSError as exc:
            raise TusError(500, "storage-error", "could not write", operation="write x") from exc
    except TusError as error:
        assert cause_of(error) == "OSError: [Errno 30] Read-only file system"
    assert cause_of(TusError(500, "storage-inconsistent", "a gap")) == "a gap"


class UnwritableStore(MemoryStore):
    async def write(self, info: UploadInfo, chunks: AsyncIterable[bytes], commit: Commit) -> int:
        try:
            raise OSError(5, "Input/output error")
        except OSError as exc:
            raise TusError(500, "storage-error", "cannot write", operation="write x") from exc


async def test_an_overridden_patch_is_named_patch_on_its_error_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(Config(), store=UnwritableStore())
    caplog.set_level(logging.INFO)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tus.test") as client:
            created = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
            url = created.headers["Location"]
            response = await client.post(
                url,
                content=b"abc",
                headers={
                    **TUS,
                    "X-HTTP-Method-Override": "PATCH",
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
            )
    assert response.status_code == 500
    [record] = error_records(caplog)
    path = httpx.URL(url).path
    assert record.getMessage() == (
        f"PATCH {path} answered 500 storage-error: write x failed: "
        "OSError: [Errno 5] Input/output error"
    )
