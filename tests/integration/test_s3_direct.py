"""Direct-to-S3 uploads (tusd_py/direct_s3) against moto over HTTP, with local and Redis state.

The app runs in-process; every presigned URL it hands out is used for real, with raw HTTP
straight to moto, as a browser running @uppy/aws-s3 would. Content is checked by SHA-256.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.support.in_process import app_client
from tests.support.s3_client import s3_client
from tests.support.servers import RedisServer, S3Server, unique_prefix
from tusd_py.config import Config
from tusd_py.expiry import sweep_once
from tusd_py.hooks import HookEvent, HookResponse, HTTPResponse
from tusd_py.protocol.context import TusContext
from tusd_py.validation import ConfigError

MIB = 1024 * 1024
ROUTES = "/files/s3"


class Direct:
    """One app with --s3-direct, its hook events, and raw HTTP to moto for the parts."""

    def __init__(self, client: httpx.AsyncClient, s3: S3Server, bucket: str) -> None:
        self.client = client
        self.s3 = s3
        self.bucket = bucket
        self.events: list[HookEvent] = []
        self.raw = httpx.AsyncClient(timeout=60)

    @property
    def ctx(self) -> TusContext:
        ctx: TusContext = self.client.app.state.tus  # type: ignore[attr-defined]
        return ctx

    async def create(self, filename: str = "movie.mp4", **metadata: Any) -> dict[str, str]:
        response = await self.client.post(
            f"{ROUTES}/multipart",
            json={"filename": filename, "type": "video/mp4", "metadata": metadata},
        )
        assert response.status_code == 200, response.text
        body: dict[str, str] = response.json()
        return body

    async def sign(self, upload_id: str, key: str, number: int | str) -> httpx.Response:
        return await self.client.get(
            f"{ROUTES}/multipart/{upload_id}/{number}", params={"key": key}
        )

    async def put_part(self, upload: dict[str, str], number: int, data: bytes) -> str:
        signed = await self.sign(upload["uploadId"], upload["key"], number)
        assert signed.status_code == 200, signed.text
        assert signed.json()["expires"] == 900
        response = await self.raw.put(signed.json()["url"], content=data)
        assert response.status_code == 200, response.text
        return response.headers["ETag"]

    async def complete(
        self, upload: dict[str, str], parts: list[dict[str, Any]], key: str | None = None
    ) -> httpx.Response:
        return await self.client.post(
            f"{ROUTES}/multipart/{upload['uploadId']}/complete",
            params={"key": key or upload["key"]},
            json={"parts": parts},
        )

    def multipart_keys(self) -> list[str]:
        listing = s3_client(self.s3).list_multipart_uploads(Bucket=self.bucket)
        return sorted(u["Key"] for u in listing.get("Uploads", []))

    def object_sha256(self, key: str) -> str:
        body = s3_client(self.s3).get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return hashlib.sha256(body).hexdigest()

    async def event(self, hook: str, within: float = 30.0) -> HookEvent:
        """The first `hook` event (post-* are delivered by background workers)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for event in self.events:
                if event.type.value == hook:
                    return event
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {hook} event within {within}s: {self.events}")


HookMap = dict[str, Callable[[HookEvent], HookResponse | None]]


@pytest.fixture(params=["local", "redis"])
def state(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def direct_app(state: str, s3: S3Server, bucket: str, redis: RedisServer) -> Callable[..., Any]:
    def start(hooks: HookMap | None = None, **options: Any) -> Any:
        config = Config(
            s3_bucket=bucket,
            s3_endpoint=s3.endpoint,
            s3_region="us-east-1",
            s3_direct=True,
            redis_url=redis.url if state == "redis" else None,
            redis_prefix=unique_prefix(),
            **options,
        )
        return _started(config, s3, bucket, hooks or {})

    return start


def _started(config: Config, s3: S3Server, bucket: str, hooks: HookMap) -> Any:
    import contextlib

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[Direct]:
        recorded: list[HookEvent] = []

        def recorder(name: str) -> Callable[[HookEvent], HookResponse | None]:
            def hook(event: HookEvent) -> HookResponse | None:
                recorded.append(event)
                own = hooks.get(name)
                return own(event) if own is not None else None

            return hook

        names = ["pre-create", "post-create", "post-finish", "post-terminate", "pre-access"]
        async with app_client(config, hooks={n: recorder(n) for n in names}) as client:
            direct = Direct(client, s3, bucket)
            direct.events = recorded
            try:
                yield direct
            finally:
                await direct.raw.aclose()

    return running()


async def test_a_multipart_upload_through_every_route(direct_app: Any) -> None:
    data = os.urandom(5 * MIB + 12345)
    async with direct_app() as d:
        upload = await d.create("movie.mp4", name="movie.mp4", type="video/mp4", size=len(data))
        assert upload["bucket"] == d.bucket
        assert upload["key"] == upload["uploadId"]  # server-issued: not the filename
        assert d.multipart_keys() == [upload["key"]]

        first = await d.put_part(upload, 1, data[: 5 * MIB])
        second = await d.put_part(upload, 2, data[5 * MIB :])
        listed = await d.client.get(
            f"{ROUTES}/multipart/{upload['uploadId']}", params={"key": upload["key"]}
        )
        assert listed.status_code == 200
        assert [(p["PartNumber"], p["Size"]) for p in listed.json()] == [
            (1, 5 * MIB),
            (2, 12345),
        ]
        assert listed.json()[0]["ETag"].strip('"') == first.strip('"')

        # One ETag quoted, one not: browsers hand over either.
        parts = [
            {"PartNumber": 1, "ETag": first},
            {"PartNumber": 2, "ETag": second.strip('"')},
        ]
        done = await d.complete(upload, parts)
        assert done.status_code == 200, done.text
        assert done.json()["key"] == upload["key"]
        assert done.json()["bucket"] == d.bucket
        assert done.json()["location"].endswith(f"/{d.bucket}/{upload['key']}")
        assert d.object_sha256(upload["key"]) == hashlib.sha256(data).hexdigest()
        assert d.multipart_keys() == []

        finished = await d.event("post-finish")
        assert finished.upload.id == upload["uploadId"]
        assert finished.upload.length == len(data)
        assert finished.upload.metadata["filename"] == "movie.mp4"
        assert finished.upload.metadata["size"] == str(len(data))
        payload = finished.to_json()["Event"]["Upload"]
        assert payload["Size"] == len(data)
        assert payload["Storage"]["UploadPath"] == "s3-multipart"
        assert payload["Storage"]["Key"] == upload["key"]

        # A repeated completion (its answer was lost) answers the same; post-finish once.
        again = await d.complete(upload, parts)
        assert again.status_code == 200 and again.json() == done.json()
        await asyncio.sleep(0.2)
        assert [e.type.value for e in d.events].count("post-finish") == 1
        # The record is no tus upload.
        head = await d.client.head(
            f"/files/{upload['uploadId']}", headers={"Tus-Resumable": "1.0.0"}
        )
        assert head.status_code == 404


async def test_requests_that_do_not_match_the_record_change_nothing(direct_app: Any) -> None:
    async with direct_app() as d:
        a = await d.create("a.bin")
        b = await d.create("b.bin")
        etag = await d.put_part(a, 1, b"x" * 1000)
        tus = await d.client.post(
            "/files/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "10"}
        )
        tus_id = tus.headers["Location"].rsplit("/", 1)[1]
        before = d.multipart_keys()
        assert len(before) == 3

        # a's id with b's key, a forged id, a tus upload's id, a malformed id
        assert (await d.sign(a["uploadId"], b["key"], 1)).status_code == 403
        assert (await d.sign("f" * 32, a["key"], 1)).status_code == 404
        assert (await d.sign(tus_id, tus_id, 1)).status_code == 404
        assert (await d.sign("..%2F..", a["key"], 1)).status_code == 404
        missing_key = await d.client.get(f"{ROUTES}/multipart/{a['uploadId']}/1")
        assert missing_key.status_code == 400
        complete = await d.complete(a, [{"PartNumber": 1, "ETag": etag}], key=b["key"])
        assert complete.status_code == 403
        assert complete.json()["error"] == "direct-key-mismatch"
        listed = await d.client.get(f"{ROUTES}/multipart/{a['uploadId']}", params={"key": b["key"]})
        assert listed.status_code == 403
        aborted = await d.client.delete(
            f"{ROUTES}/multipart/{a['uploadId']}", params={"key": b["key"]}
        )
        assert aborted.status_code == 403
        forged = await d.client.delete(f"{ROUTES}/multipart/{tus_id}", params={"key": tus_id})
        assert forged.status_code == 404

        assert d.multipart_keys() == before
        listed = await d.client.get(f"{ROUTES}/multipart/{a['uploadId']}", params={"key": a["key"]})
        assert [p["PartNumber"] for p in listed.json()] == [1]

        # A completion naming a part not uploaded, or with another ETag, is refused too.
        wrong = await d.complete(a, [{"PartNumber": 1, "ETag": '"0123"'}])
        assert wrong.status_code == 400 and wrong.json()["error"] == "part-etag-mismatch"
        absent = await d.complete(a, [{"PartNumber": 2, "ETag": etag}])
        assert absent.status_code == 400 and absent.json()["error"] == "part-not-uploaded"
        assert d.multipart_keys() == before


async def test_part_numbers_are_1_to_10000(direct_app: Any) -> None:
    async with direct_app() as d:
        upload = await d.create()
        for bad in ("0", "10001", "x", "-1", "1.5"):
            response = await d.sign(upload["uploadId"], upload["key"], bad)
            assert response.status_code == 400, bad
            assert response.json()["error"] == "invalid-part-number"
        for good in (1, 10000):
            assert (await d.sign(upload["uploadId"], upload["key"], good)).status_code == 200
        bad_complete = await d.complete(upload, [{"PartNumber": 10001, "ETag": "e"}])
        assert bad_complete.status_code == 400


async def test_max_size_is_enforced_at_complete_from_the_stored_parts(direct_app: Any) -> None:
    async with direct_app(max_size=6 * MIB) as d:
        upload = await d.create()
        first = await d.put_part(upload, 1, os.urandom(5 * MIB))
        second = await d.put_part(upload, 2, os.urandom(2 * MIB))
        parts = [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]
        response = await d.complete(upload, parts)
        assert response.status_code == 413, response.text
        # Aborted at once: no object, no multipart upload, no record.
        assert d.multipart_keys() == []
        assert "Contents" not in s3_client(d.s3).list_objects_v2(Bucket=d.bucket)
        assert (await d.sign(upload["uploadId"], upload["key"], 1)).status_code == 404
        assert (await d.event("post-terminate")).upload.id == upload["uploadId"]


async def test_parts_below_5_mib_before_the_last_are_refused(direct_app: Any) -> None:
    async with direct_app() as d:
        upload = await d.create()
        first = await d.put_part(upload, 1, b"a" * 1000)
        second = await d.put_part(upload, 2, b"b" * 1000)
        parts = [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]
        response = await d.complete(upload, parts)
        assert response.status_code == 400 and response.json()["error"] == "part-too-small"
        assert d.multipart_keys() == [upload["key"]]


async def test_abort_removes_the_multipart_upload(direct_app: Any) -> None:
    async with direct_app() as d:
        upload = await d.create()
        await d.put_part(upload, 1, b"a" * 1000)
        response = await d.client.delete(
            f"{ROUTES}/multipart/{upload['uploadId']}", params={"key": upload["key"]}
        )
        assert response.status_code == 200 and response.json() == {}
        assert d.multipart_keys() == []
        assert (await d.event("post-terminate")).upload.id == upload["uploadId"]
        again = await d.sign(upload["uploadId"], upload["key"], 1)
        assert again.status_code == 404


async def test_expiry_aborts_an_abandoned_multipart_upload(direct_app: Any) -> None:
    async with direct_app() as d:
        kept = await d.create("kept.bin")
        abandoned = await d.create("abandoned.bin")
        await d.put_part(abandoned, 1, b"a" * 1000)
        info = await d.ctx.state.get(abandoned["uploadId"])
        assert info is not None
        info.expires_at = time.time() - 1
        await d.ctx.state.update(info, None)
        assert await sweep_once(d.ctx) == 1
        assert d.multipart_keys() == [kept["key"]]
        gone = await d.sign(abandoned["uploadId"], abandoned["key"], 1)
        assert gone.status_code == 404


async def test_pre_create_can_refuse_or_choose_the_key(direct_app: Any) -> None:
    def pre_create(event: HookEvent) -> HookResponse | None:
        if event.upload.metadata.get("filename") == "refused.exe":
            return HookResponse(reject_upload=True, http_response=HTTPResponse(403, "no exe"))
        from tusd_py.hooks import FileInfoChanges

        return HookResponse(change_file_info=FileInfoChanges(id="chosen-id"))

    async with direct_app(hooks={"pre-create": pre_create}, s3_prefix="up/") as d:
        refused = await d.client.post(
            f"{ROUTES}/multipart", json={"filename": "refused.exe", "type": "x", "metadata": {}}
        )
        assert refused.status_code == 403
        assert d.multipart_keys() == []
        upload = await d.create("fine.bin")
        assert upload == {"key": "up/chosen-id", "uploadId": "chosen-id", "bucket": d.bucket}
        assert (await d.sign("chosen-id", "up/chosen-id", 1)).status_code == 200


async def test_bad_creation_bodies_are_400(direct_app: Any) -> None:
    async with direct_app() as d:
        for body in (b"not json", b"[]", b'{"filename": 3}', b'{"metadata": {"a b": "c"}}'):
            response = await d.client.post(f"{ROUTES}/multipart", content=body)
            assert response.status_code == 400, body
        assert d.multipart_keys() == []


async def test_a_small_file_by_presigned_post(direct_app: Any) -> None:
    data = os.urandom(3000)
    async with direct_app(max_size=4000) as d:
        response = await d.client.get(
            f"{ROUTES}/params",
            params={"filename": "notes.txt", "type": "text/plain", "metadata[name]": "notes.txt"},
        )
        assert response.status_code == 200, response.text
        form = response.json()
        assert form["method"] == "POST"
        assert form["url"].endswith(f"/{d.bucket}/")
        key = form["fields"]["key"]
        posted = await d.raw.post(
            form["url"], data=form["fields"], files={"file": ("notes.txt", data, "text/plain")}
        )
        assert posted.status_code in (200, 201, 204), posted.text
        assert d.object_sha256(key) == hashlib.sha256(data).hexdigest()
        head = s3_client(d.s3).head_object(Bucket=d.bucket, Key=key)
        assert head["ContentType"] == "text/plain"
        pre_create = await d.event("pre-create")
        assert pre_create.upload.metadata == {
            "name": "notes.txt",
            "filename": "notes.txt",
            "filetype": "text/plain",
        }

        # content-length-range caps the body at --max-size. moto does not check POST policies,
        # so the signed policy itself is what is checked here (S3 refuses with EntityTooLarge).
        policy = json.loads(base64.b64decode(form["fields"]["policy"]))
        assert ["content-length-range", 0, 4000] in policy["conditions"]
        assert {"Content-Type": "text/plain"} in policy["conditions"]
        assert {"key": key} in policy["conditions"]


def test_s3_direct_needs_the_s3_store() -> None:
    with pytest.raises(ConfigError, match="--s3-direct is set but --s3-bucket is not"):
        Config(s3_direct=True)


async def test_a_token_in_the_path_reaches_the_hooks(direct_app: Any) -> None:
    """@uppy/aws-s3 6 sends no custom headers: the auth recipe puts a token in
    companionEndpoint, which the hooks read from the request URI (docs/direct-s3.md)."""

    def pre_create(event: HookEvent) -> HookResponse | None:
        if not event.request.uri.startswith("/files/good-token/s3/"):
            return HookResponse(reject_upload=True, http_response=HTTPResponse(401))
        return None

    async with direct_app(
        hooks={"pre-create": pre_create}, s3_direct_path="/files/{token}/s3"
    ) as d:
        body = {"filename": "a", "type": "b", "metadata": {}}
        refused = await d.client.post("/files/bad-token/s3/multipart", json=body)
        assert refused.status_code == 401
        created = await d.client.post("/files/good-token/s3/multipart", json=body)
        assert created.status_code == 200, created.text
        assert d.multipart_keys() == [created.json()["key"]]


async def test_the_tus_endpoint_does_not_know_direct_uploads(
    state: str, s3: S3Server, bucket: str, redis: RedisServer
) -> None:
    """Without hooks (no pre-access lookup first): HEAD, PATCH, GET and DELETE of a direct
    upload's id answer 404 and change nothing."""
    config = Config(
        s3_bucket=bucket,
        s3_endpoint=s3.endpoint,
        s3_region="us-east-1",
        s3_direct=True,
        redis_url=redis.url if state == "redis" else None,
        redis_prefix=unique_prefix(),
    )
    async with app_client(config) as client:
        d = Direct(client, s3, bucket)
        upload = await d.create()
        url = f"/files/{upload['uploadId']}"
        tus = {"Tus-Resumable": "1.0.0"}
        assert (await client.head(url, headers=tus)).status_code == 404
        patch_headers = {
            **tus,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        }
        assert (await client.patch(url, headers=patch_headers, content=b"abc")).status_code == 404
        assert (await client.get(url)).status_code == 404
        assert (await client.delete(url, headers=tus)).status_code == 404
        assert d.multipart_keys() == [upload["key"]]
        signed = await d.sign(upload["uploadId"], upload["key"], 1)
        assert signed.status_code == 200
        await d.raw.aclose()
