"""HTTP hooks through a real receiver: tusd's request format, every hook, and each way to fail."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from prometheus_client import REGISTRY

from tests.ops.conftest import ALL_EVENTS, AppFactory
from tests.ops.helpers import TUS, create, metadata, patch, slow_body
from tests.support.hook_receiver import HookReceiver
from tests.support.processes import free_port


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def stored(tmp_path: Path) -> list[str]:
    directory = tmp_path / "uploads"
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))  # no .index


async def test_every_hook_in_tusd_format(tus_app: AppFactory, receiver: HookReceiver) -> None:
    async with tus_app(hooks_http=receiver.url, hooks_enabled_events=ALL_EVENTS) as client:
        created = await create(
            client, 5, **{"Upload-Metadata": metadata(filename="a.txt"), "X-Custom": "yes"}
        )
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        upload_id = url.rsplit("/", 1)[-1]
        assert (await patch(client, url, 0, b"hello")).status_code == 204
        deleted = await client.delete(url, headers=TUS)
        assert deleted.status_code == 204, deleted.text
        await receiver.wait_for("post-terminate")
        await receiver.wait_for("post-finish")

    (pre_create,) = receiver.of("pre-create")
    assert pre_create.upload == {
        "ID": "",
        "Size": 5,
        "SizeIsDeferred": False,
        "Offset": 0,
        "MetaData": {"filename": "a.txt"},
        "IsPartial": False,
        "IsFinal": False,
        "PartialUploads": None,
        "Storage": None,
    }
    request = pre_create.request
    assert request["Method"] == "POST"
    assert request["URI"] == "/files/"
    assert request["RemoteAddr"].startswith("127.0.0.1:")
    assert request["Header"]["Tus-Resumable"] == ["1.0.0"]
    assert request["Header"]["X-Custom"] == ["yes"]

    (post_create,) = receiver.of("post-create")
    assert post_create.upload["ID"] == upload_id
    assert post_create.upload["Storage"]["Type"] == "filestore"
    assert post_create.upload["Storage"]["Path"].endswith(f"/uploads/{upload_id}")

    for hook in ("pre-finish", "post-finish"):
        (delivery,) = receiver.of(hook)
        assert delivery.upload["Offset"] == 5 and delivery.upload["ID"] == upload_id
        assert delivery.request["Method"] == "PATCH"
    assert receiver.of("post-receive")[-1].upload["Offset"] == 5
    for hook in ("pre-terminate", "post-terminate"):
        (delivery,) = receiver.of(hook)
        assert delivery.upload["ID"] == upload_id
        assert delivery.request["Method"] == "DELETE"
    assert receiver.types()[0] == "pre-create"


async def test_default_events_are_tusds(tus_app: AppFactory, receiver: HookReceiver) -> None:
    async with tus_app(hooks_http=receiver.url) as client:
        url = (await create(client, 3)).headers["Location"]
        assert (await patch(client, url, 0, b"abc")).status_code == 204
        assert (await client.delete(url, headers=TUS)).status_code == 204
        await receiver.wait_for("post-terminate")
        await receiver.wait_for("post-finish")
    assert "pre-finish" not in receiver.types()
    assert "pre-terminate" not in receiver.types()


async def test_pre_create_rejects_with_the_hooks_response(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    receiver.answer(
        "pre-create",
        body={
            "RejectUpload": True,
            "HTTPResponse": {
                "StatusCode": 403,
                "Body": '{"message":"quota exceeded"}',
                "Header": {"Content-Type": "application/json", "X-Reason": "quota"},
            },
        },
    )
    async with tus_app(hooks_http=receiver.url) as client:
        response = await create(client, 10)
    assert response.status_code == 403
    assert response.text == '{"message":"quota exceeded"}'
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Reason"] == "quota"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert stored(tmp_path) == []
    assert receiver.of("post-create") == []


async def test_pre_create_rejection_defaults_to_400(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    receiver.answer("pre-create", body={"RejectUpload": True})
    async with tus_app(hooks_http=receiver.url) as client:
        response = await create(client, 10)
    assert response.status_code == 400
    assert "rejected" in response.text
    assert stored(tmp_path) == []


async def test_pre_create_sets_the_id_and_metadata(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    receiver.answer(
        "pre-create",
        body={"ChangeFileInfo": {"ID": "project-7_upload-1", "MetaData": {"owner": "ana"}}},
    )
    async with tus_app(hooks_http=receiver.url) as client:
        created = await create(client, 2, **{"Upload-Metadata": metadata(filename="x.bin")})
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        assert url.endswith("/files/project-7_upload-1")
        head = await client.head(url, headers=TUS)
        (post_create,) = await receiver.wait_for("post-create")
    assert head.status_code == 200
    assert head.headers["Upload-Metadata"] == "owner " + base64.b64encode(b"ana").decode()
    assert post_create.upload["ID"] == "project-7_upload-1"
    assert post_create.upload["MetaData"] == {"owner": "ana"}
    assert "project-7_upload-1" in stored(tmp_path)


async def test_pre_create_metadata_the_header_cannot_carry_fails_cleanly(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    """Only the header is stored (issue 14, finding 6): a key it cannot carry is refused, not
    a header that HEAD could not send or a load could not parse."""
    receiver.answer("pre-create", body={"ChangeFileInfo": {"MetaData": {"ключ": "v"}}})
    async with tus_app(hooks_http=receiver.url) as client:
        response = await create(client, 2)
    assert response.status_code == 500
    assert "ChangeFileInfo.MetaData" in response.text and "latin-1" in response.text
    assert stored(tmp_path) == []


async def test_pre_create_with_an_unsafe_id_fails_cleanly(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    receiver.answer("pre-create", body={"ChangeFileInfo": {"ID": "../../etc/passwd"}})
    errors = sample("tusd_hook_errors_total", hook="pre-create")
    async with tus_app(hooks_http=receiver.url) as client:
        response = await create(client, 2)
    assert response.status_code == 500
    assert "pre-create hook failed" in response.text
    assert "not a valid upload id" in response.text
    assert stored(tmp_path) == []
    assert sample("tusd_hook_errors_total", hook="pre-create") == errors + 1


async def test_an_unreachable_receiver_fails_pre_create_after_retries(
    tus_app: AppFactory, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks"
    async with tus_app(hooks_http=url, hooks_http_retry=2) as client:
        response = await create(client, 2)
    assert response.status_code == 500
    assert "pre-create hook failed, so the upload was not created" in response.text
    assert "after 3 attempts" in response.text
    assert stored(tmp_path) == []


async def test_5xx_answers_are_retried(tus_app: AppFactory, receiver: HookReceiver) -> None:
    answers = iter([(500, b"busy"), (503, b"busy"), (200, {})])
    receiver.scripts["pre-create"] = lambda _: next(answers)
    async with tus_app(hooks_http=receiver.url, hooks_http_retry=3) as client:
        response = await create(client, 2)
    assert response.status_code == 201, response.text
    assert len(receiver.of("pre-create")) == 3


async def test_a_4xx_answer_is_a_failure_and_not_retried(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    receiver.answer("pre-create", status=401, body=b"who are you")
    async with tus_app(hooks_http=receiver.url) as client:
        response = await create(client, 2)
    assert response.status_code == 500
    assert "answered 401" in response.text and "who are you" in response.text
    assert len(receiver.of("pre-create")) == 1
    assert stored(tmp_path) == []


async def test_a_non_json_answer_is_a_failure(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    receiver.answer("pre-create", body=b"<html>oops</html>")
    async with tus_app(hooks_http=receiver.url) as client:
        response = await create(client, 2)
    assert response.status_code == 500
    assert "not JSON" in response.text
    assert stored(tmp_path) == []


async def test_a_slow_receiver_times_out(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    receiver.delay = 1.0
    async with tus_app(
        hooks_http=receiver.url, hooks_http_timeout=0.1, hooks_http_retry=0
    ) as client:
        response = await create(client, 2)
    assert response.status_code == 500
    assert "TimeoutError" in response.text
    assert stored(tmp_path) == []


async def test_forwarded_headers(tus_app: AppFactory, receiver: HookReceiver) -> None:
    async with tus_app(
        hooks_http=receiver.url, hooks_http_forward_headers=["Authorization", "X-Tenant"]
    ) as client:
        response = await create(
            client, 2, Authorization="Bearer t0ken", Cookie="session=1", **{"X-Tenant": "acme"}
        )
    assert response.status_code == 201
    (delivery,) = receiver.of("pre-create")
    assert delivery.headers["Authorization"] == "Bearer t0ken"
    assert delivery.headers["X-Tenant"] == "acme"
    assert "Cookie" not in delivery.headers


async def test_pre_terminate_refuses(tus_app: AppFactory, receiver: HookReceiver) -> None:
    receiver.answer(
        "pre-terminate",
        body={"RejectTermination": True, "HTTPResponse": {"StatusCode": 409, "Body": "kept"}},
    )
    events = [*ALL_EVENTS]
    async with tus_app(hooks_http=receiver.url, hooks_enabled_events=events) as client:
        url = (await create(client, 4)).headers["Location"]
        refused = await client.delete(url, headers=TUS)
        head = await client.head(url, headers=TUS)
    assert refused.status_code == 409
    assert refused.text == "kept"
    assert head.status_code == 200
    assert receiver.of("post-terminate") == []


async def test_a_failing_pre_terminate_keeps_the_upload(
    tus_app: AppFactory, receiver: HookReceiver
) -> None:
    receiver.answer("pre-terminate", status=400, body=b"nope")
    events = [*ALL_EVENTS]
    async with tus_app(hooks_http=receiver.url, hooks_enabled_events=events) as client:
        url = (await create(client, 4)).headers["Location"]
        failed = await client.delete(url, headers=TUS)
        head = await client.head(url, headers=TUS)
    assert failed.status_code == 500
    assert "pre-terminate hook failed, so the upload was not terminated" in failed.text
    assert head.status_code == 200


async def test_pre_finish_adds_to_the_last_response(
    tus_app: AppFactory, receiver: HookReceiver
) -> None:
    receiver.answer("pre-finish", body={"HTTPResponse": {"Header": {"X-Result": "stored"}}})
    events = ["pre-finish"]
    async with tus_app(hooks_http=receiver.url, hooks_enabled_events=events) as client:
        url = (await create(client, 4)).headers["Location"]
        first = await patch(client, url, 0, b"ab")
        last = await patch(client, url, 2, b"cd")
    assert first.status_code == 204 and "X-Result" not in first.headers
    assert last.status_code == 204
    assert last.headers["X-Result"] == "stored"
    assert len(receiver.of("pre-finish")) == 1


async def test_a_failing_pre_finish_answers_500(
    tus_app: AppFactory, receiver: HookReceiver
) -> None:
    receiver.answer("pre-finish", status=400, body=b"no")
    async with tus_app(hooks_http=receiver.url, hooks_enabled_events=["pre-finish"]) as client:
        url = (await create(client, 2)).headers["Location"]
        response = await patch(client, url, 0, b"ok")
        head = await client.head(url, headers=TUS)
    assert response.status_code == 500
    assert "pre-finish hook failed, so all bytes of the upload are stored" in response.text
    assert head.headers["Upload-Offset"] == "2"


async def test_post_hook_failures_never_reach_the_client(
    tus_app: AppFactory, receiver: HookReceiver
) -> None:
    receiver.answer("post-create", status=500, body=b"down")
    errors = sample("tusd_hook_errors_total", hook="post-create")
    async with tus_app(hooks_http=receiver.url, hooks_http_retry=1) as client:
        response = await create(client, 2)
        assert response.status_code == 201
        await receiver.wait_for("post-create", 2)
        for _ in range(100):
            if sample("tusd_hook_errors_total", hook="post-create") > errors:
                break
            await asyncio.sleep(0.01)
    assert sample("tusd_hook_errors_total", hook="post-create") == errors + 1


async def test_post_receive_reports_progress_at_the_interval(
    tus_app: AppFactory, receiver: HookReceiver
) -> None:
    size = 20 * 16 * 1024
    async with tus_app(
        hooks_http=receiver.url,
        hooks_enabled_events=["post-receive"],
        progress_hooks_interval=0.1,
    ) as client:
        url = (await create(client, size)).headers["Location"]
        response = await patch(client, url, 0, slow_body(20, 16 * 1024, 0.05))
        assert response.status_code == 204, response.text
        deliveries = await receiver.wait_for("post-receive")
        await asyncio.sleep(0.1)
    offsets = [d.upload["Offset"] for d in receiver.of("post-receive")]
    # About one second of body at 0.1s: throttled, yet several reports, and the last is final.
    assert 3 <= len(offsets) <= 15, offsets
    assert offsets == sorted(offsets)
    assert offsets[-1] == size
    assert all(d.request["Method"] == "PATCH" for d in deliveries)


async def test_post_receive_can_stop_an_upload(
    tus_app: AppFactory, receiver: HookReceiver, tmp_path: Path
) -> None:
    receiver.answer(
        "post-receive",
        body={"StopUpload": True, "HTTPResponse": {"StatusCode": 400, "Body": "project gone"}},
    )
    events = ["post-receive", "post-terminate"]
    async with tus_app(
        hooks_http=receiver.url, hooks_enabled_events=events, progress_hooks_interval=0.05
    ) as client:
        url = (await create(client, 100 * 16 * 1024)).headers["Location"]
        response = await patch(client, url, 0, slow_body(100, 16 * 1024, 0.02))
        head = await client.head(url, headers=TUS)
        await receiver.wait_for("post-terminate")
    assert response.status_code == 400
    assert response.text == "project gone"
    assert head.status_code == 404
    assert stored(tmp_path) == []
