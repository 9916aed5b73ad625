"""The application chooses where an upload's object goes: a pre-create hook (HTTP, through a real
receiver, and Python) answering `ChangeFileInfo.Storage`, or `--s3-key-template`. The object
lands there (bytes checked), GET, DELETE and the expiry sweep find it, and a bad answer is
refused before anything is written."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import httpx
import pytest

from tests.support.hook_receiver import HookReceiver
from tests.support.in_process import app_client, store_of
from tests.support.payloads import payload
from tests.support.s3_client import bucket_keys, new_bucket, s3_client
from tests.support.servers import S3Server
from tusd_py.app import build_store
from tusd_py.config import Config
from tusd_py.hooks import FileInfoChanges, HookEvent, HookResponse
from tusd_py.stores.s3 import S3Store
from tusd_py.validation import ConfigError

TUS = {"Tus-Resumable": "1.0.0"}
MIB = 1024 * 1024


def s3_config(s3: S3Server, bucket: str, **options: Any) -> Config:
    return Config(
        s3_bucket=bucket,
        s3_endpoint=s3.endpoint,
        s3_prefix="up/",
        s3_part_size=5 * MIB,
        hooks_enabled_events=["pre-create"],
        **options,
    )


async def upload(client: httpx.AsyncClient, data: bytes, chunk: int) -> httpx.Response:
    """Create, then PATCH `data` in `chunk`-sized requests; the creation's response."""
    created = await client.post("/files/", headers={**TUS, "Upload-Length": str(len(data))})
    if created.status_code != 201:
        return created
    url = created.headers["Location"]
    for start in range(0, len(data), chunk):
        patched = await client.patch(
            url,
            content=data[start : start + chunk],
            headers={
                **TUS,
                "Upload-Offset": str(start),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert patched.status_code == 204, patched.text
    return created


async def test_an_http_hook_chooses_the_key(s3: S3Server, receiver: HookReceiver) -> None:
    bucket = new_bucket(s3, "keys-")
    key = "up/tenants/42/report 2026.bin"
    receiver.answer("pre-create", body={"ChangeFileInfo": {"Storage": {"Key": key}}})
    data = payload(6 * MIB + 123)
    async with app_client(s3_config(s3, bucket, hooks_http=receiver.url)) as client:
        created = await upload(client, data, 2 * MIB)  # PATCHes that end inside parts
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        upload_id = url.rsplit("/", 1)[1]
        stored = s3_client(s3).get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
        assert bucket_keys(s3, bucket) == sorted([key, f"up/{upload_id}.info"])

        got = await client.get(url)
        assert got.status_code == 200 and got.content == data
        ranged = await client.get(url, headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == data[10:20]

        # A second upload may not take the same key: the first one's object stays.
        refused = await client.post("/files/", headers={**TUS, "Upload-Length": "5"})
        assert refused.status_code == 409, refused.text
        assert "already in use" in refused.text

        assert (await client.delete(url, headers=TUS)).status_code == 204
        assert bucket_keys(s3, bucket) == []


async def test_a_python_hook_and_a_restart_keep_the_key(s3: S3Server) -> None:
    """The key is in the upload's info: another app over the same bucket (a restart, without
    Redis) resumes the upload into it, and the expiry sweep finds it through its marker."""
    bucket = new_bucket(s3, "keys-")

    def choose(event: HookEvent) -> HookResponse:
        name = event.upload.metadata.get("filename", "x")
        return HookResponse(change_file_info=FileInfoChanges(storage={"Key": f"up/by-name/{name}"}))

    data = payload(5 * MIB + 7)
    config = s3_config(s3, bucket)
    async with app_client(config, hooks={"pre-create": choose}) as client:
        created = await client.post(
            "/files/",
            headers={
                **TUS,
                "Upload-Length": str(len(data)),
                "Upload-Metadata": "filename YS5iaW4=",
            },
        )
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        upload_id = url.rsplit("/", 1)[1]
        first = await client.patch(
            url,
            content=data[: 3 * MIB],
            headers={
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert first.status_code == 204
        store = store_of(client, S3Store)
        assert [i async for i in store.list_unfinished_ids()] == [upload_id]
    async with app_client(config) as client:
        head = await client.head(url, headers=TUS)
        assert head.headers["Upload-Offset"] == str(3 * MIB)
        rest = await client.patch(
            url,
            content=data[3 * MIB :],
            headers={
                **TUS,
                "Upload-Offset": str(3 * MIB),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert rest.status_code == 204, rest.text
        assert [i async for i in store_of(client, S3Store).list_unfinished_ids()] == []
    stored = s3_client(s3).get_object(Bucket=bucket, Key="up/by-name/a.bin")["Body"].read()
    assert stored == data
    assert bucket_keys(s3, bucket) == sorted(["up/by-name/a.bin", f"up/{upload_id}.info"])


@pytest.mark.parametrize(
    ("storage", "says"),
    [
        ({"Key": "up/../escape"}, "'..' path segment"),
        ({"Key": "/up/abs"}, "starts or ends with"),
        ({"Key": "other/x"}, "prefix"),
        ({"Key": "up/a\x00b"}, "control character"),
        ({"Key": "up/" + "k" * 1000}, "longer than"),
        ({"Key": "up/x.info"}, "store's own objects"),
        ({"Key": "up/x", "Bucket": "someone-elses"}, "not one this store may write to"),
        ({"Path": "x"}, "does not take"),
        ({"Colour": "blue"}, "unknown field"),
    ],
)
async def test_a_bad_storage_answer_is_refused_before_anything_is_written(
    s3: S3Server, receiver: HookReceiver, storage: dict[str, str], says: str
) -> None:
    bucket = new_bucket(s3, "keys-")
    receiver.answer("pre-create", body={"ChangeFileInfo": {"Storage": storage}})
    async with app_client(s3_config(s3, bucket, hooks_http=receiver.url)) as client:
        refused = await client.post("/files/", headers={**TUS, "Upload-Length": "5"})
    assert refused.status_code == 500, refused.text
    assert says in refused.text
    assert bucket_keys(s3, bucket) == []
    assert not s3_client(s3).list_multipart_uploads(Bucket=bucket).get("Uploads")


async def test_the_key_template(s3: S3Server) -> None:
    bucket = new_bucket(s3, "keys-")
    config = s3_config(s3, bucket, s3_key_template="{prefix}{yyyy}/{mm}/{id}")
    data = b"templated bytes"
    async with app_client(config) as client:
        created = await upload(client, data, len(data))
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        assert (await client.get(url)).content == data
    upload_id = url.rsplit("/", 1)[1]
    month = time.strftime("%Y/%m", time.gmtime())
    assert bucket_keys(s3, bucket) == sorted([f"up/{month}/{upload_id}", f"up/{upload_id}.info"])


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{prefix}{yyyy}/x", "must contain {id}"),
        ("{id}", "must start with {prefix}"),
        ("{prefix}{filename}/{id}", "{filename}"),
        ("{prefix}{id", "not a valid template"),
    ],
)
def test_a_bad_key_template_is_a_configuration_error(template: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build_store(Config(s3_bucket="b", s3_key_template=template))
    assert says in str(refused.value) and "--s3-key-template" in str(refused.value)


async def test_concatenation_with_chosen_keys(s3: S3Server) -> None:
    bucket = new_bucket(s3, "keys-")

    def choose(event: HookEvent) -> HookResponse:
        name = event.upload.metadata["filename"]
        return HookResponse(change_file_info=FileInfoChanges(storage={"Key": f"up/c/{name}"}))

    pieces = [payload(5 * MIB + 1, seed=1), payload(300, seed=2)]
    async with app_client(s3_config(s3, bucket), hooks={"pre-create": choose}) as client:
        urls = []
        for number, piece in enumerate(pieces):
            name = base64.b64encode(f"part{number}".encode()).decode()
            created = await client.post(
                "/files/",
                headers={
                    **TUS,
                    "Upload-Length": str(len(piece)),
                    "Upload-Concat": "partial",
                    "Upload-Metadata": f"filename {name}",
                },
            )
            assert created.status_code == 201, created.text
            url = created.headers["Location"]
            patched = await client.patch(
                url,
                content=piece,
                headers={
                    **TUS,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
            )
            assert patched.status_code == 204, patched.text
            urls.append(url)
        final = await client.post(
            "/files/",
            headers={
                **TUS,
                "Upload-Concat": "final;" + " ".join(urls),
                "Upload-Metadata": "filename " + base64.b64encode(b"whole").decode(),
            },
        )
        assert final.status_code == 201, final.text
        got = await client.get(final.headers["Location"])
        assert got.status_code == 200 and got.content == b"".join(pieces)
    stored = s3_client(s3).get_object(Bucket=bucket, Key="up/c/whole")["Body"].read()
    assert stored == b"".join(pieces)


@pytest.mark.parametrize("with_key", [True, False])
async def test_an_allowed_bucket(s3: S3Server, receiver: HookReceiver, with_key: bool) -> None:
    """The hook places the upload in another bucket from --s3-allowed-buckets: the object and
    its segments go there, the `.info` and the marker stay in the store's bucket."""
    bucket, other = new_bucket(s3, "keys-"), new_bucket(s3, "other-")
    storage = {"Bucket": other, **({"Key": "up/elsewhere/a.bin"} if with_key else {})}
    receiver.answer("pre-create", body={"ChangeFileInfo": {"Storage": storage}})
    config = s3_config(s3, bucket, hooks_http=receiver.url, s3_allowed_buckets=[other])
    data = payload(5 * MIB + 99)
    async with app_client(config) as client:
        created = await client.post("/files/", headers={**TUS, "Upload-Length": str(len(data))})
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        upload_id = url.rsplit("/", 1)[1]
        key = "up/elsewhere/a.bin" if with_key else f"up/{upload_id}"
        first = await client.patch(
            url,
            content=data[:MIB],
            headers={
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert first.status_code == 204, first.text
        assert all(k.startswith(key + ".part.") for k in bucket_keys(s3, other))
        store = store_of(client, S3Store)
        assert [i async for i in store.list_unfinished_ids()] == [upload_id]
        rest = await client.patch(
            url,
            content=data[MIB:],
            headers={
                **TUS,
                "Upload-Offset": str(MIB),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert rest.status_code == 204, rest.text
        assert bucket_keys(s3, other) == [key]
        assert bucket_keys(s3, bucket) == [f"up/{upload_id}.info"]
        assert s3_client(s3).get_object(Bucket=other, Key=key)["Body"].read() == data
        got = await client.get(url, headers={"Range": "bytes=5-9"})
        assert got.status_code == 206 and got.content == data[5:10]
        assert (await client.delete(url, headers=TUS)).status_code == 204
    assert bucket_keys(s3, other) == [] and bucket_keys(s3, bucket) == []
