"""The pre-access hook: Python functions and a real HTTP receiver, on tus 1.0.0 and the IETF draft.

A refusal must leave the upload exactly as it was: offset, bytes on disk, and the upload itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.ops.conftest import AppFactory
from tests.ops.helpers import TUS, create, metadata, patch
from tests.support.hook_receiver import HookReceiver
from tests.support.servers import RedisServer, unique_prefix
from tests.support.tusd_process import TusdProcess
from tusd_py.hooks import HookEvent, HookResponse, HTTPResponse

PRE_ACCESS = ["pre-access"]


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[-1]


async def two_uploads(client: httpx.AsyncClient) -> tuple[str, str]:
    """An unfinished upload (3 of 5 bytes: "abc") and a finished one ("done")."""
    partial = (await create(client, 5, **{"Upload-Metadata": metadata(owner="ana")})).headers[
        "Location"
    ]
    assert (await patch(client, partial, 0, b"abc")).status_code == 204
    finished = (await create(client, 4)).headers["Location"]
    assert (await patch(client, finished, 0, b"done")).status_code == 204
    return partial, finished


async def refused_requests(client: httpx.AsyncClient, partial: str, finished: str) -> list[int]:
    """HEAD, PATCH and DELETE of the unfinished upload, GET of the finished one."""
    return [
        (await client.head(partial, headers=TUS)).status_code,
        (await patch(client, partial, 3, b"de")).status_code,
        (await client.delete(partial, headers=TUS)).status_code,
        (await client.get(finished)).status_code,
    ]


async def assert_unchanged(
    client: httpx.AsyncClient, partial: str, finished: str, tmp_path: Path
) -> None:
    head = await client.head(partial, headers=TUS)
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "3"
    assert (tmp_path / "uploads" / upload_id(partial)).read_bytes() == b"abc"
    download = await client.get(finished)
    assert download.status_code == 200 and download.content == b"done"


async def test_a_python_hook_refuses_head_patch_get_and_delete(
    tus_app: AppFactory, tmp_path: Path
) -> None:
    seen: list[HookEvent] = []
    refuse = False

    def pre_access(event: HookEvent) -> HookResponse | None:
        seen.append(event)
        if not refuse:
            return None
        return HookResponse(reject_access=True)

    async with tus_app(hooks={"pre-access": pre_access}) as client:
        partial, finished = await two_uploads(client)
        refuse = True
        statuses = await refused_requests(client, partial, finished)
        refused = await client.delete(partial, headers=TUS)
        refuse = False
        await assert_unchanged(client, partial, finished, tmp_path)
    assert statuses == [403, 403, 403, 403]
    assert refused.headers["Tus-Resumable"] == "1.0.0"
    assert "refused access" in refused.text

    modes = {(e.request.method, e.access.mode) for e in seen if e.access is not None}
    assert modes == {("HEAD", "read"), ("GET", "read"), ("PATCH", "write"), ("DELETE", "write")}
    for event in seen:
        assert event.access is not None
        (file,) = event.access.files
        assert file.id == event.upload.id
    head_event = next(e for e in seen if e.request.method == "HEAD")
    assert head_event.upload.metadata == {"owner": "ana"}
    assert head_event.upload.offset == 3


async def test_an_allowed_access_leaves_the_response_alone(tus_app: AppFactory) -> None:
    def pre_access(event: HookEvent) -> HookResponse:
        # Only a refusal may change the response: a body here would replace the download.
        return HookResponse(http_response=HTTPResponse(299, "not the upload", {"X-A": "1"}))

    async with tus_app(hooks={"pre-access": pre_access}) as client:
        url = (await create(client, 2)).headers["Location"]
        assert (await patch(client, url, 0, b"hi")).status_code == 204
        download = await client.get(url)
        head = await client.head(url, headers=TUS)
    assert download.status_code == 200 and download.content == b"hi"
    assert "X-A" not in download.headers
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "2"


async def test_unknown_uploads_are_404_before_the_hook(tus_app: AppFactory) -> None:
    calls: list[HookEvent] = []
    async with tus_app(hooks={"pre-access": calls.append}) as client:
        response = await client.head("/files/nosuchupload", headers=TUS)
    assert response.status_code == 404
    assert calls == []


async def test_the_http_hook_gets_tusds_payload_and_refuses(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    refusal = {
        "RejectAccess": True,
        "HTTPResponse": {
            "StatusCode": 401,
            "Body": '{"message":"not your upload"}',
            "Header": {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"},
        },
    }
    async with tus_app(
        hooks_http=receiver.url, hooks_enabled_events=["pre-create", *PRE_ACCESS]
    ) as client:
        partial, finished = await two_uploads(client)
        allowed = len(receiver.of("pre-access"))
        receiver.answer("pre-access", body=refusal)
        statuses = await refused_requests(client, partial, finished)
        refused = await client.head(partial, headers={**TUS, "Authorization": "Bearer x"})
        receiver.answer("pre-access", body={})
        await assert_unchanged(client, partial, finished, tmp_path)
    assert statuses == [401, 401, 401, 401]
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert refused.headers["Content-Type"] == "application/json"

    assert allowed == 2  # the two PATCHes that filled the uploads
    deliveries = receiver.of("pre-access")
    by_method: dict[str, dict[str, Any]] = {}
    for delivery in deliveries:
        by_method.setdefault(delivery.request["Method"], delivery.body)
    assert set(by_method) == {"HEAD", "PATCH", "DELETE", "GET"}
    head = by_method["HEAD"]["Event"]
    assert head["Access"]["Mode"] == "read"
    assert by_method["GET"]["Event"]["Access"]["Mode"] == "read"
    assert by_method["PATCH"]["Event"]["Access"]["Mode"] == "write"
    assert by_method["DELETE"]["Event"]["Access"]["Mode"] == "write"
    upload = head["Upload"]
    assert upload["ID"] == upload_id(partial)
    assert upload["Offset"] == 3 and upload["Size"] == 5
    assert upload["MetaData"] == {"owner": "ana"}
    assert upload["Storage"]["Type"] == "filestore"
    assert head["Access"]["Files"] == [upload]
    assert head["HTTPRequest"]["URI"] == f"/files/{upload_id(partial)}"
    authorized = [d for d in deliveries if "Authorization" in d.request["Header"]]
    assert authorized[0].request["Header"]["Authorization"] == ["Bearer x"]
    # Other events carry no Access object, as before.
    assert "Access" not in receiver.of("pre-create")[0].body["Event"]


async def test_pre_access_is_off_unless_enabled(
    tus_app: AppFactory, receiver: HookReceiver
) -> None:
    receiver.answer("pre-access", body={"RejectAccess": True})
    async with tus_app(hooks_http=receiver.url) as client:
        url = (await create(client, 2)).headers["Location"]
        assert (await client.head(url, headers=TUS)).status_code == 200
    assert receiver.of("pre-access") == []


async def test_a_refusal_with_a_success_status_is_still_a_refusal(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    async with tus_app(hooks_http=receiver.url, hooks_enabled_events=PRE_ACCESS) as client:
        url = (await create(client, 5)).headers["Location"]
        receiver.answer(
            "pre-access", body={"RejectAccess": True, "HTTPResponse": {"StatusCode": 204}}
        )
        refused = await patch(client, url, 0, b"abc")
        receiver.answer("pre-access", body={})
        head = await client.head(url, headers=TUS)
    assert refused.status_code == 403
    assert head.headers["Upload-Offset"] == "0"


async def test_unusable_answers_fail_closed(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    """A receiver that fails or answers nonsense never grants access: 500, nothing changed."""
    answers: list[tuple[int, Any]] = [
        (200, {"RejectAccess": True, "HTTPResponse": {"StatusCode": 700}}),
        (200, {"RejectAccess": "yes"}),
        (200, b"x" * (65 * 1024)),
        (200, b"<html>"),
        (503, b"down"),
        (403, b"no"),
    ]
    async with tus_app(
        hooks_http=receiver.url, hooks_enabled_events=PRE_ACCESS, hooks_http_retry=0
    ) as client:
        url = (await create(client, 5)).headers["Location"]
        statuses = []
        for status, body in answers:
            receiver.answer("pre-access", status=status, body=body)
            statuses.append((await patch(client, url, 0, b"abc")).status_code)
            statuses.append((await client.delete(url, headers=TUS)).status_code)
        receiver.answer("pre-access", body={})
        head = await client.head(url, headers=TUS)
    assert statuses == [500] * (2 * len(answers))
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "0"
    assert (tmp_path / "uploads" / upload_id(url)).read_bytes() == b""


async def test_the_method_override_is_checked_as_the_method_it_names(
    tus_app: AppFactory,
) -> None:
    modes: list[str] = []

    def pre_access(event: HookEvent) -> HookResponse:
        assert event.access is not None
        modes.append(event.access.mode)
        return HookResponse(reject_access=True)

    async with tus_app(hooks={"pre-access": pre_access}) as client:
        url = (await create(client, 2)).headers["Location"]
        response = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
        assert (await client.head(url, headers=TUS)).status_code == 403
    assert response.status_code == 403
    assert modes == ["write", "read"]


async def test_the_ietf_draft_requests_are_checked_too(tus_app: AppFactory, tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    def pre_access(event: HookEvent) -> HookResponse:
        assert event.access is not None
        seen.append((event.request.method, event.access.mode))
        return HookResponse(reject_access=True, http_response=HTTPResponse(404, "no such upload"))

    draft = {"Upload-Draft-Interop-Version": "6"}
    async with tus_app(hooks={"pre-access": pre_access}) as client:
        url = (await create(client, 5)).headers["Location"]
        head = await client.head(url, headers=draft)
        append = await client.patch(
            url,
            headers={
                **draft,
                "Upload-Offset": "0",
                "Upload-Complete": "?0",
                "Content-Type": "application/partial-upload",
            },
            content=b"abc",
        )
        cancel = await client.delete(url, headers=draft)
        get = await client.get(url, headers=draft)
    assert [head.status_code, append.status_code, cancel.status_code, get.status_code] == [
        404,
        404,
        404,
        404,
    ]
    assert append.text == "no such upload"
    assert seen == [("HEAD", "read"), ("PATCH", "write"), ("DELETE", "write"), ("GET", "read")]
    assert (tmp_path / "uploads" / upload_id(url)).read_bytes() == b""


async def test_a_real_server_process_asks_the_receiver(
    receiver: HookReceiver, tmp_path: Path
) -> None:
    """End to end: `python -m tusd_py` with --hooks-http and pre-access enabled."""
    args = ("--hooks-http", receiver.url, "--hooks-enabled-events", "pre-access")
    server = await asyncio.to_thread(TusdProcess, tmp_path / "uploads", args)
    try:
        async with httpx.AsyncClient() as client:
            created = await client.post(server.endpoint, headers={**TUS, "Upload-Length": "3"})
            url = created.headers["Location"]
            receiver.scripts["pre-access"] = lambda body: (
                200,
                {"RejectAccess": body["Event"]["HTTPRequest"]["Method"] == "PATCH"},
            )
            refused = await patch(client, url, 0, b"abc")
            head = await client.head(url, headers=TUS)
    finally:
        await asyncio.to_thread(server.stop)
    assert refused.status_code == 403
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "0"
    assert [d.body["Event"]["Access"]["Mode"] for d in receiver.of("pre-access")] == [
        "write",
        "read",
    ]


async def test_with_redis_state_a_refusal_changes_nothing_there(
    tus_app: AppFactory, redis: RedisServer, tmp_path: Path
) -> None:
    """On a real redis-server: the hook reads the info from Redis, a refused PATCH and DELETE
    leave the offset and the upload there."""
    refuse = False

    def pre_access(event: HookEvent) -> HookResponse:
        return HookResponse(reject_access=refuse)

    async with tus_app(
        hooks={"pre-access": pre_access}, redis_url=redis.url, redis_prefix=unique_prefix()
    ) as client:
        url = (await create(client, 5, **{"Upload-Metadata": metadata(owner="ana")})).headers[
            "Location"
        ]
        assert (await patch(client, url, 0, b"abc")).status_code == 204
        refuse = True
        statuses = [
            (await patch(client, url, 3, b"de")).status_code,
            (await client.delete(url, headers=TUS)).status_code,
            (await client.head(url, headers=TUS)).status_code,
        ]
        refuse = False
        head = await client.head(url, headers=TUS)
    assert statuses == [403, 403, 403]
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "3"
    assert (tmp_path / "uploads" / upload_id(url)).read_bytes() == b"abc"
