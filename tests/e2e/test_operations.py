"""The real server process in production mode: JSON logs, /metrics, hooks set on the CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.source_files import MakeFile
from tests.support.tus_requests import TUS, download_sha256, wait_until
from tests.support.tusd_process import StartTusd

pytestmark = pytest.mark.e2e


def upload(endpoint: str, data: bytes, **headers: str) -> str:
    created = httpx.post(
        endpoint, headers={**TUS, "Upload-Length": str(len(data)), **headers}, timeout=30
    )
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    patched = httpx.patch(
        url,
        headers={
            **TUS,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
            **headers,
        },
        content=data,
        timeout=30,
    )
    assert patched.status_code == 204, patched.text
    return url


def metric_values(base: str) -> dict[str, float]:
    text = httpx.get(base + "/metrics", timeout=10).text
    return {
        sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_json_logs_carry_upload_and_request_ids(
    tusd_factory: StartTusd, make_file: MakeFile
) -> None:
    server = tusd_factory("--log-format", "json")
    source = make_file(64 * 1024)
    url = upload(server.endpoint, source.data, **{"X-Request-ID": "e2e-req-1"})
    upload_id = url.rsplit("/", 1)[-1]
    assert download_sha256(url) == (source.size, source.sha256)

    def records() -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(server.lines) if line.startswith("{")]

    # The access line of a request is written just after its response.
    download_line = f"GET /files/{upload_id} 200"
    assert wait_until(lambda: any(r["message"].startswith(download_line) for r in records()), 5)
    lines = [line for line in server.lines if line.startswith("{")]
    assert lines, server.output
    about_upload = [r for r in records() if r.get("upload_id") == upload_id]
    messages = [r["message"] for r in about_upload]
    assert "upload created" in messages and "upload finished" in messages, messages
    assert any(m.startswith(download_line) for m in messages), messages
    for record in about_upload:
        assert record["request_id"], record
        assert {"time", "level", "logger", "message"} <= record.keys()
    created = next(r for r in about_upload if r["message"] == "upload created")
    assert created["request_id"] == "e2e-req-1"
    assert created["length"] == source.size
    # uvicorn's own lines use the same format.
    assert any(r["logger"].startswith("uvicorn") for r in records())


def test_metrics_reflect_a_real_upload(tusd_factory: StartTusd, make_file: MakeFile) -> None:
    server = tusd_factory()
    base = server.endpoint.removesuffix("/files/")
    source = make_file(300 * 1024)
    before = metric_values(base)
    upload(server.endpoint, source.data)
    after = metric_values(base)

    def delta(name: str, **labels: str) -> float:
        key = name + json.dumps(labels, sort_keys=True)
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("tusd_bytes_received_total") == source.size
    assert delta("tusd_uploads_created_total") == 1
    assert delta("tusd_uploads_finished_total") == 1
    assert delta("tusd_requests_total", method="POST", status="201") == 1
    assert delta("tusd_requests_total", method="PATCH", status="204") == 1
    assert after["tusd_connections_open{}"] == 0
    assert "process_cpu_seconds_total{}" in after  # the default collectors come along
    assert httpx.get(base + "/ready", timeout=10).status_code == 200


class _Receiver(BaseHTTPRequestHandler):
    events: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.events.append(body)
        answer: dict[str, Any] = {}
        if body["Event"]["Upload"]["MetaData"].get("reject") is not None:
            answer = {"RejectUpload": True, "HTTPResponse": {"StatusCode": 422, "Body": "no"}}
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    events: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"events": events})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", events
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_hooks_configured_on_the_command_line(
    tusd_factory: StartTusd, hook_receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, events = hook_receiver
    server = tusd_factory("--hooks-http", url, "--hooks-enabled-events", "pre-create,post-finish")
    upload(server.endpoint, b"hello hooks")
    assert wait_until(lambda: any(e["Type"] == "post-finish" for e in events), 10), events
    assert [e["Type"] for e in events] == ["pre-create", "post-finish"]
    assert events[1]["Event"]["Upload"]["Offset"] == 11

    rejected = httpx.post(
        server.endpoint,
        headers={**TUS, "Upload-Length": "1", "Upload-Metadata": "reject"},
        timeout=30,
    )
    assert rejected.status_code == 422
    assert rejected.text == "no"
