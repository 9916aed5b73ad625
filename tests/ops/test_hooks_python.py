"""Python hook functions passed to `create_app`: sync or async, typed events and answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.ops.conftest import AppFactory
from tests.ops.helpers import TUS, create, metadata, patch
from tests.support.hook_receiver import HookReceiver
from tusd_py import TusError
from tusd_py.hooks import FileInfoChanges, HookEvent, HookResponse, HookType, HTTPResponse


def stored(tmp_path: Path) -> list[str]:
    directory = tmp_path / "uploads"
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))  # no .index


async def test_sync_and_async_functions_see_every_event(tus_app: AppFactory) -> None:
    seen: list[HookEvent] = []

    def record(event: HookEvent) -> None:
        seen.append(event)

    async def record_async(event: HookEvent) -> HookResponse:
        await asyncio.sleep(0)
        seen.append(event)
        return HookResponse()

    hooks = {
        HookType.PRE_CREATE: record,
        "post-create": record_async,
        "pre-finish": record,
        "post-finish": record_async,
        "pre-terminate": record,
        "post-terminate": record_async,
    }
    async with tus_app(hooks=hooks) as client:
        created = await create(client, 3, **{"Upload-Metadata": metadata(filename="n.txt")})
        url = created.headers["Location"]
        assert (await patch(client, url, 0, b"abc")).status_code == 204
        assert (await client.delete(url, headers=TUS)).status_code == 204
        for _ in range(100):
            if len(seen) == 6:
                break
            await asyncio.sleep(0.01)
    assert sorted(e.type.value for e in seen) == sorted(
        h.value for h in HookType if h.value not in ("post-receive", "pre-access")
    )
    pre_create = next(e for e in seen if e.type is HookType.PRE_CREATE)
    assert pre_create.upload.metadata == {"filename": "n.txt"}
    assert pre_create.upload.length == 3
    assert pre_create.request.method == "POST"
    assert pre_create.request.header("tus-resumable") == "1.0.0"
    finish = next(e for e in seen if e.type is HookType.POST_FINISH)
    assert finish.upload.offset == 3 and finish.upload.id == url.rsplit("/", 1)[-1]


async def test_a_function_rejects_with_its_own_response(
    tus_app: AppFactory, tmp_path: Path
) -> None:
    def pre_create(event: HookEvent) -> HookResponse | None:
        if event.request.header("authorization") != "Bearer good":
            return HookResponse(
                reject_upload=True,
                http_response=HTTPResponse(401, "sign in first", {"WWW-Authenticate": "Bearer"}),
            )
        return None

    async with tus_app(hooks={"pre-create": pre_create}) as client:
        refused = await create(client, 1)
        allowed = await create(client, 1, Authorization="Bearer good")
    assert refused.status_code == 401
    assert refused.text == "sign in first"
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert allowed.status_code == 201
    assert len(stored(tmp_path)) == 2  # one upload: data + .info


async def test_a_function_sets_the_id_and_metadata(tus_app: AppFactory) -> None:
    async def pre_create(event: HookEvent) -> HookResponse:
        name = event.upload.metadata.get("filename", "")
        return HookResponse(
            change_file_info=FileInfoChanges(id="doc-42", metadata={"filename": name.upper()})
        )

    async with tus_app(hooks={"pre-create": pre_create}) as client:
        created = await create(client, 1, **{"Upload-Metadata": metadata(filename="a.txt")})
        head = await client.head(created.headers["Location"], headers=TUS)
    assert created.headers["Location"].endswith("/files/doc-42")
    assert head.headers["Upload-Metadata"] == metadata(filename="A.TXT")


async def test_a_function_that_raises_fails_cleanly(tus_app: AppFactory, tmp_path: Path) -> None:
    def pre_create(event: HookEvent) -> None:
        raise RuntimeError("database is down")

    async with tus_app(hooks={"pre-create": pre_create}) as client:
        response = await create(client, 1)
    assert response.status_code == 500
    assert "pre-create hook failed" in response.text
    assert "database is down" in response.text
    assert stored(tmp_path) == []


async def test_a_function_may_raise_a_tus_error_to_answer(tus_app: AppFactory) -> None:
    def pre_create(event: HookEvent) -> None:
        raise TusError(402, "payment-required", "upgrade your plan for uploads this large")

    async with tus_app(hooks={"pre-create": pre_create}) as client:
        response = await create(client, 1)
    assert response.status_code == 402
    assert "upgrade your plan" in response.text


async def test_a_wrong_return_value_is_a_failure(tus_app: AppFactory, tmp_path: Path) -> None:
    async with tus_app(hooks={"pre-create": lambda event: {"RejectUpload": True}}) as client:
        response = await create(client, 1)
    assert response.status_code == 500
    assert "not a HookResponse" in response.text
    assert stored(tmp_path) == []


async def test_an_invalid_id_from_a_function_is_refused(
    tus_app: AppFactory, tmp_path: Path
) -> None:
    def pre_create(event: HookEvent) -> HookResponse:
        return HookResponse(change_file_info=FileInfoChanges(id="a/b"))

    async with tus_app(hooks={"pre-create": pre_create}) as client:
        response = await create(client, 1)
    assert response.status_code == 500
    assert "not a valid upload id" in response.text
    assert stored(tmp_path) == []


async def test_pre_terminate_function_refuses(tus_app: AppFactory) -> None:
    async with tus_app(
        hooks={"pre-terminate": lambda event: HookResponse(reject_termination=True)}
    ) as client:
        url = (await create(client, 1)).headers["Location"]
        refused = await client.delete(url, headers=TUS)
        head = await client.head(url, headers=TUS)
    assert refused.status_code == 400
    assert head.status_code == 200


async def test_post_receive_function_stops_an_upload(tus_app: AppFactory) -> None:
    from tests.ops.helpers import slow_body

    async with tus_app(
        hooks={"post-receive": lambda event: HookResponse(stop_upload=True)},
        progress_hooks_interval=0.05,
    ) as client:
        url = (await create(client, 50 * 16 * 1024)).headers["Location"]
        response = await patch(client, url, 0, slow_body(50, 16 * 1024, 0.02))
        head = await client.head(url, headers=TUS)
    assert response.status_code == 400
    assert "stopped this upload" in response.text
    assert head.status_code == 404


async def test_functions_run_before_the_http_hook(
    tus_app: AppFactory, receiver: HookReceiver
) -> None:
    receiver.answer("pre-create", body={"ChangeFileInfo": {"ID": "from-http"}})

    def pre_create(event: HookEvent) -> HookResponse:
        return HookResponse(change_file_info=FileInfoChanges(id="from-python"))

    async with tus_app(hooks={"pre-create": pre_create}, hooks_http=receiver.url) as client:
        created = await create(client, 1)
    # Both ran; the HTTP answer came later, so its id wins.
    assert created.headers["Location"].endswith("/from-http")
    assert len(receiver.of("pre-create")) == 1
