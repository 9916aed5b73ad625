"""Uppy (the npm bundle: Dashboard + AwsS3 with `companionEndpoint`) in headless Chromium, with
tusd-py's direct-to-S3 routes signing and moto's S3 server taking the bytes.

The page comes from a third origin: the signing requests to tusd-py and the part PUTs (and the
small file's POST) to moto are all cross-origin, so both answer CORS (tusd-py from
--cors-origins, moto from the bucket's CORS rule, the one docs/direct-s3.md gives). The objects
in the bucket are checked by SHA-256, and file hooks record post-finish.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, Request

from tests.support.browser import serve_uppy_page, throttle_uploads, wait_for
from tests.support.s3_client import new_bucket, s3_client
from tests.support.servers import S3Server
from tests.support.source_files import MakeFile, SourceFile
from tests.support.tus_requests import wait_until
from tests.support.tusd_process import StartTusd, TusdProcess

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
PAGE = Path(__file__).parent / "pages" / "uppy-s3.html"
FILE_INPUT = ".uppy-Dashboard-input[name='files[]']"
UPLOAD_BUTTON = ".uppy-StatusBar-actionBtn--upload"
# One file per event, renamed into place once whole: hooks run concurrently, and appends of
# several KB to one file interleave.
HOOK = "#!/bin/sh\ncat > {log}/$$.tmp && mv {log}/$$.tmp {log}/$(date +%s%N)-$$.json\n"


@pytest.fixture
def uppy_origin() -> Iterator[str]:
    with serve_uppy_page(PAGE) as origin:
        yield origin


@pytest.fixture
def bucket(s3: S3Server, uppy_origin: str) -> str:
    """A bucket with the CORS rule browsers need to PUT parts and read their ETags."""
    name = new_bucket(s3, "direct-")
    s3_client(s3).put_bucket_cors(
        Bucket=name,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": [uppy_origin],
                    "AllowedMethods": ["PUT", "POST"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 3000,
                }
            ]
        },
    )
    return name


@pytest.fixture
def hook_log(tmp_path: Path) -> Path:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    log = tmp_path / "hook-events"
    log.mkdir()
    for name in ("pre-create", "post-finish"):
        script = hooks / name
        script.write_text(HOOK.format(log=log))
        script.chmod(0o755)
    return log


@pytest.fixture
def server(
    tusd_factory: StartTusd, s3: S3Server, bucket: str, uppy_origin: str, hook_log: Path
) -> TusdProcess:
    return tusd_factory(
        "--s3-bucket", bucket, "--s3-endpoint", s3.endpoint, "--s3-region", "us-east-1",
        "--s3-direct", "--cors-origins", uppy_origin,
        "--hooks-dir", str(hook_log.parent / "hooks"),
        "--hooks-enabled-events", "pre-create,post-finish",
    )  # fmt: skip


def hook_events(log: Path, hook: str) -> list[dict[str, Any]]:
    events = [json.loads(path.read_text()) for path in sorted(log.glob("*.json"))]
    return [event for event in events if event["Type"] == hook]


def open_uppy(
    page: Page, origin: str, server: TusdProcess, golden: bool = False, tus: bool = False
) -> None:
    companion = server.endpoint.rstrip("/")  # Uppy calls <companionEndpoint>/s3/...
    query = {"companion": companion, "golden": "1" if golden else "0"}
    if tus:
        query["tus"] = server.endpoint
    page.goto(f"{origin}/?" + urlencode(query))
    wait_for(page, "document.body.dataset.ready === 'yes'")


def choose_and_upload(
    page: Page, *sources: SourceFile, dashboard: str = "#dashboard", uppy: str = "uppy"
) -> None:
    page.set_input_files(f"{dashboard} {FILE_INPUT}", [source.path for source in sources])
    wait_for(page, f"{uppy}.getFiles().length === {len(sources)}")
    page.click(f"{dashboard} {UPLOAD_BUTTON}")


def upload_result(page: Page, timeout: float = 300.0, name: str = "complete") -> dict[str, Any]:
    result: dict[str, Any] = json.loads(wait_for(page, f"document.body.dataset.{name}", timeout))
    return result


def object_digest(s3: S3Server, bucket: str, key: str) -> tuple[int, str]:
    body = s3_client(s3).get_object(Bucket=bucket, Key=key)["Body"].read()
    return len(body), hashlib.sha256(body).hexdigest()


def test_dashboard_uploads_a_multipart_and_a_small_file_straight_to_s3(
    server: TusdProcess,
    s3: S3Server,
    bucket: str,
    hook_log: Path,
    make_file: MakeFile,
    page: Page,
    uppy_origin: str,
) -> None:
    large, small = make_file(120 * MiB), make_file(1234)
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    open_uppy(page, uppy_origin, server)
    choose_and_upload(page, large, small)
    result = upload_result(page)

    assert result["failed"] == [], result
    keys = {file["name"]: file["key"] for file in result["successful"]}
    assert set(keys) == {large.path.name, small.path.name}, result
    for source in (large, small):
        assert object_digest(s3, bucket, keys[source.path.name]) == (source.size, source.sha256)
    # The large file's bytes went to S3 as parts (24 of 5 MiB), none through tusd-py.
    puts = [r for r in sent if r.method == "PUT" and r.url.startswith(s3.endpoint)]
    assert len(puts) == 24, len(puts)
    to_server = [r for r in sent if r.url.startswith(server.endpoint.rstrip("/"))]
    assert all(len(r.post_data_buffer or b"") < 64 * 1024 for r in to_server)
    # pre-create for both; post-finish for the multipart one (S3 tells no one of a POST).
    assert wait_until(lambda: len(hook_events(hook_log, "post-finish")) == 1, 30)
    finished = hook_events(hook_log, "post-finish")[0]["Event"]["Upload"]
    assert finished["Size"] == large.size
    assert finished["Storage"]["Key"] == keys[large.path.name]
    assert finished["Storage"]["UploadPath"] == "s3-multipart"
    assert finished["MetaData"]["filename"] == large.path.name
    assert len(hook_events(hook_log, "pre-create")) == 2


def test_reload_in_the_middle_resumes_through_list_parts(
    server: TusdProcess,
    s3: S3Server,
    bucket: str,
    make_file: MakeFile,
    page: Page,
    uppy_origin: str,
) -> None:
    source = make_file(40 * MiB)  # 8 parts of 5 MiB
    open_uppy(page, uppy_origin, server, golden=True)
    throttle_uploads(page, 4 * MiB)
    choose_and_upload(page, source)
    wait_for(page, "window.parts >= 2", timeout=120)
    parts_before = page.evaluate("window.parts")
    page.reload()

    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    wait_for(page, "document.body.dataset.ready === 'yes'")
    wait_for(page, "uppy.getFiles().length === 1 && uppy.getFiles()[0].isGhost === true")
    # Golden Retriever kept the file's state (its uploadId and key) but not a file this large
    # (a "ghost"): the person re-selects it, and Uppy continues the multipart upload.
    page.click(".uppy-Dashboard-Item-reSelect")  # opens the add-files panel
    page.set_input_files(FILE_INPUT, source.path)
    wait_for(page, "uppy.getFiles()[0].isGhost !== true")
    page.click(UPLOAD_BUTTON)  # "You can now resume the upload"
    result = upload_result(page)
    assert result["failed"] == [], result
    [done] = result["successful"]
    assert object_digest(s3, bucket, done["key"]) == (source.size, source.sha256)

    base = server.endpoint.rstrip("/") + "/s3/multipart"
    calls = [(r.method, r.url.split("?")[0]) for r in sent if r.url.startswith(base)]
    assert ("POST", base) not in calls, calls  # no new multipart upload
    upload_id = done["key"]  # the key is <prefix><id>, and the prefix is empty
    assert ("GET", f"{base}/{upload_id}") in calls, calls  # ListParts
    puts = [r for r in sent if r.method == "PUT" and r.url.startswith(s3.endpoint)]
    assert len(puts) <= 8 - parts_before, (len(puts), parts_before)


def test_tus_and_direct_uploads_in_one_page_land_in_one_bucket_with_the_same_hooks(
    server: TusdProcess,
    s3: S3Server,
    bucket: str,
    hook_log: Path,
    make_file: MakeFile,
    page: Page,
    uppy_origin: str,
) -> None:
    by_tus, direct = make_file(7 * MiB), make_file(11 * MiB)
    open_uppy(page, uppy_origin, server, tus=True)
    choose_and_upload(page, by_tus, dashboard="#tus-dashboard", uppy="tusUppy")
    choose_and_upload(page, direct)
    tus_result, direct_result = upload_result(page, name="tusComplete"), upload_result(page)
    assert tus_result["failed"] == [] and direct_result["failed"] == [], (tus_result, direct_result)

    tus_key = tus_result["successful"][0]["url"].rsplit("/", 1)[1]  # the key is the tus id
    direct_key = direct_result["successful"][0]["key"]
    assert object_digest(s3, bucket, tus_key) == (by_tus.size, by_tus.sha256)
    assert object_digest(s3, bucket, direct_key) == (direct.size, direct.sha256)

    assert wait_until(lambda: len(hook_events(hook_log, "post-finish")) == 2, 30)
    finished = {
        event["Event"]["Upload"]["MetaData"]["filename"]: event["Event"]["Upload"]
        for event in hook_events(hook_log, "post-finish")
    }
    assert set(finished) == {by_tus.path.name, direct.path.name}
    for source, key in ((by_tus, tus_key), (direct, direct_key)):
        upload = finished[source.path.name]
        assert upload["Size"] == source.size
        assert upload["Storage"]["Type"] == "s3store"
        assert upload["Storage"]["Bucket"] == bucket
        assert upload["Storage"]["Key"] == key
    assert "UploadPath" not in finished[by_tus.path.name]["Storage"]
    assert finished[direct.path.name]["Storage"]["UploadPath"] == "s3-multipart"
    assert len(hook_events(hook_log, "pre-create")) == 2
