"""tus-js-client's `addRequestId` on a real server: each request's id is echoed and names exactly
that request's line in the server's log, as docs/deployment.md tells operators to rely on."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.source_files import MakeFile
from tests.support.tus_js_client import assert_stored, upload_with_js
from tests.support.tus_requests import wait_until
from tests.support.tusd_process import LISTENING, StartTusd

pytestmark = pytest.mark.e2e

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_each_request_id_of_tus_js_client_names_its_access_line(
    tusd_factory: StartTusd, make_file: MakeFile
) -> None:
    server = tusd_factory("--log-format", "json")
    source = make_file(3 * 256 * 1024)
    result = upload_with_js(server.endpoint, source, chunkSize=256 * 1024, addRequestId=True)
    assert_stored(server, result["url"], source)
    sent = [(r["method"], r["requestId"]) for r in result["requests"]]
    assert [method for method, _ in sent] == ["POST", "PATCH", "PATCH", "PATCH"]
    assert all(UUID.fullmatch(request_id) for _, request_id in sent), sent
    assert len({request_id for _, request_id in sent}) == len(sent)  # a fresh one each time
    assert [r["headers"]["X-Request-ID"] for r in result["requests"]] == [i for _, i in sent]

    def access_lines() -> list[dict[str, object]]:
        records = [
            json.loads(line)
            for line in server.lines
            if line.startswith("{") or not LISTENING.search(line)
        ]
        return [r for r in records if r["logger"] == "tusd_py.access"]

    ids = {request_id for _, request_id in sent}
    wait_until(lambda: ids <= {r.get("request_id") for r in access_lines()}, timeout=5)
    upload_id = result["url"].rsplit("/", 1)[-1]
    for method, request_id in sent:
        [line] = [r for r in access_lines() if r.get("request_id") == request_id]
        assert line["method"] == method and line["upload_id"] == upload_id, line
