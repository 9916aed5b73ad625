"""`/metrics`, `/ready`, `/health` and `X-Request-ID`, in process."""

from __future__ import annotations

import shutil
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.ops.conftest import AppFactory
from tests.ops.helpers import TUS, create, patch
from tests.support.processes import free_port
from tests.support.s3_client import new_bucket
from tests.support.servers import RedisServer, S3Server
from tusd_py.metrics import observe_s3_request, s3_request


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_reflect_an_upload(tus_app: AppFactory) -> None:
    async with tus_app() as client:
        before = samples((await client.get("/metrics")).text)
        url = (await create(client, 3000)).headers["Location"]
        assert (await patch(client, url, 0, b"a" * 1000)).status_code == 204
        assert (await patch(client, url, 1000, b"b" * 2000)).status_code == 204
        assert (await patch(client, url, 0, b"c")).status_code == 409
        other = (await create(client, 10)).headers["Location"]
        assert (await client.delete(other, headers=TUS)).status_code == 204
        response = await client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    after = samples(response.text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tusd_bytes_received_total") == 3000  # the 409 was answered before its body
    assert delta("tusd_uploads_created_total") == 2
    assert delta("tusd_uploads_finished_total") == 1
    assert delta("tusd_uploads_terminated_total") == 1
    assert delta("tusd_requests_total", method="POST", status="201") == 2
    assert delta("tusd_requests_total", method="PATCH", status="204") == 2
    assert delta("tusd_requests_total", method="PATCH", status="409") == 1
    assert delta("tusd_requests_total", method="DELETE", status="204") == 1
    assert delta("tusd_lock_wait_seconds_count", outcome="acquired") >= 4
    assert value(after, "tusd_connections_open") == 0
    # Scrapes are not requests of the tus endpoint.
    assert delta("tusd_requests_total", method="GET", status="200") == 0


async def test_s3_helpers_record_durations(tus_app: AppFactory) -> None:
    async with tus_app() as client:
        before = samples((await client.get("/metrics")).text)
        observe_s3_request("UploadPart", 0.2)
        try:
            with s3_request("CompleteMultipartUpload"):
                raise ConnectionError("simulated")
        except ConnectionError:
            pass
        after = samples((await client.get("/metrics")).text)
    name = "tusd_s3_request_duration_seconds_count"
    assert (
        value(after, name, operation="UploadPart", outcome="ok")
        - value(before, name, operation="UploadPart", outcome="ok")
        == 1
    )
    assert (
        value(after, name, operation="CompleteMultipartUpload", outcome="error")
        - value(before, name, operation="CompleteMultipartUpload", outcome="error")
        == 1
    )


async def test_metrics_can_be_turned_off(tus_app: AppFactory) -> None:
    async with tus_app(metrics=False) as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_request_id_is_honoured_or_made(tus_app: AppFactory) -> None:
    async with tus_app() as client:
        given = await create(client, 1, **{"X-Request-ID": "req-1234"})
        made = await create(client, 1)
        unsafe = await create(client, 1, **{"X-Request-ID": "has space"})
        error = await client.head("/files/unknown", headers={**TUS, "X-Request-ID": "req-404"})
    assert given.headers["X-Request-ID"] == "req-1234"
    assert len(made.headers["X-Request-ID"]) == 32
    assert unsafe.headers["X-Request-ID"] != "has space"
    assert error.status_code == 404 and error.headers["X-Request-ID"] == "req-404"


async def test_health_and_ready(tus_app: AppFactory) -> None:
    async with tus_app() as client:
        assert (await client.get("/health")).status_code == 200
        ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.text == "ready\n"


async def test_ready_answers_503_when_a_backend_is_down(tus_app: AppFactory) -> None:
    async with tus_app() as client:
        transport = client._transport
        assert hasattr(transport, "app")
        ctx = transport.app.state.tus

        async def unreachable() -> None:
            raise ConnectionError("Connection refused by 127.0.0.1:6379")

        ctx.state.ready = unreachable
        response = await client.get("/ready")
    assert response.status_code == 503
    assert "state: Connection refused by 127.0.0.1:6379" in response.text


async def test_ready_checks_the_upload_directory(tus_app: AppFactory, tmp_path: Path) -> None:
    async with tus_app() as client:
        assert (await client.get("/ready")).status_code == 200
        shutil.rmtree(tmp_path / "uploads")
        response = await client.get("/ready")
    assert response.status_code == 503
    assert "storage: the upload directory" in response.text


async def test_ready_checks_redis(tus_app: AppFactory, redis: RedisServer) -> None:
    async with tus_app(redis_url=redis.url, redis_prefix="ready-test") as client:
        assert (await client.get("/ready")).status_code == 200
    down = f"redis://127.0.0.1:{free_port()}/0"
    async with tus_app(redis_url=down, redis_prefix="ready-test") as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    assert "state: " in response.text


async def test_ready_checks_the_bucket_and_s3_requests_are_timed(
    tus_app: AppFactory, s3: S3Server
) -> None:
    bucket = new_bucket(s3, "ready-")
    s3_options = {"s3_endpoint": s3.endpoint, "s3_region": "us-east-1"}
    async with tus_app(s3_bucket=bucket, **s3_options) as client:
        before = samples((await client.get("/metrics")).text)
        assert (await client.get("/ready")).status_code == 200
        url = (await create(client, 3)).headers["Location"]
        assert (await patch(client, url, 0, b"abc")).status_code == 204
        after = samples((await client.get("/metrics")).text)
    name = "tusd_s3_request_duration_seconds_count"
    for operation in ("head_bucket", "create_multipart_upload", "complete_multipart_upload"):
        grew = value(after, name, operation=operation, outcome="ok") - value(
            before, name, operation=operation, outcome="ok"
        )
        assert grew >= 1, operation
    async with tus_app(s3_bucket="no-such-bucket-here", **s3_options) as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    assert "storage: " in response.text
