"""A real server process on each store the end-to-end suites run on, and what each store holds.

`start_on(store, request, start)` starts `python -m tusd_py` (through the `tusd_factory` fixture's
`start`) on one of `STORES`:

file   the default store, in the test's upload directory
s3     the bucket of its own on the session's moto server, behind two instances sharing Redis
       (`S3Fleet`): the client talks to `a`, and `b` must see the same upload
s3-tls the same on the session's moto server over HTTPS (`s3_tls`), certificates verified against
       the session's CA (`--s3-ca-bundle`); not in `STORES`: suites that want it ask for it
azure  a container of its own on the session's Azurite

The session servers (`s3`, `redis`, `azurite`) are asked for only when a store needs them, so
`-k file` starts neither moto nor Azurite. `StoreServer.assert_holds` checks what the store itself
keeps once an upload is finished: one object or blob and its `.info`, nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.azurite import AzuriteServer, unique_container
from tests.support.s3_client import new_bucket, s3_client
from tests.support.servers import RedisServer, S3Server
from tests.support.source_files import SourceFile
from tests.support.tus_requests import download_sha256
from tests.support.tusd_process import StartTusd, TusdProcess
from tusd_py.stores.azure import AzureStore

STORES = ["file", "s3", "azure"]
S3_TLS = "s3-tls"


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class StoreServer:
    """The server a client uploads to, and the check of what its store holds afterwards."""

    store: str
    tusd: TusdProcess
    assert_holds: Callable[[str, SourceFile], None]


@dataclass
class S3Fleet:
    """Two instances on one bucket, their state in one Redis."""

    a: TusdProcess
    b: TusdProcess
    bucket: str
    s3: Any  # tests.support.s3_client

    def assert_one_object(self, upload_url: str, source: SourceFile) -> None:
        key = upload_id(upload_url)
        s3 = self.s3
        listing = s3.list_objects_v2(Bucket=self.bucket)
        keys = sorted(o["Key"] for o in listing.get("Contents", []))
        assert keys == [key, key + ".info"], keys
        open_uploads = s3.list_multipart_uploads(Bucket=self.bucket)
        assert open_uploads.get("Uploads", []) == []
        body = s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (source.size, source.sha256)

    def assert_holds(self, upload_url: str, source: SourceFile) -> None:
        # The other instance knows the upload too: state is in Redis, bytes in the bucket.
        assert download_sha256(self.b.url_for(upload_url)) == (source.size, source.sha256)
        self.assert_one_object(upload_url, source)


def s3_fleet(start: StartTusd, s3: S3Server, redis: RedisServer) -> S3Fleet:
    bucket = new_bucket(s3, "e2e-")
    args: tuple[str, ...] = (
        "--s3-bucket", bucket, "--s3-endpoint", s3.endpoint,
        "--redis-url", redis.url, "--redis-prefix", f"e2e-{bucket}",
    )  # fmt: skip
    if s3.ca_bundle:
        args += ("--s3-ca-bundle", s3.ca_bundle)
    return S3Fleet(start(*args), start(*args), bucket, s3_client(s3))


def blob_names(azurite: AzuriteServer, container: str) -> list[str]:
    async def names() -> list[str]:
        store = AzureStore(container, connection_string=azurite.connection_string)
        await store.open()
        try:
            # Names starting with "." are the store's index of uploads, not uploads.
            blobs = store._containers().list_blobs()
            return sorted([str(i.name) async for i in blobs if not str(i.name).startswith(".")])
        finally:
            await store.close()

    return asyncio.run(names())


def start_on(store: str, request: pytest.FixtureRequest, start: StartTusd) -> StoreServer:
    if store == "file":
        return StoreServer(store, start(), lambda url, source: None)
    if store in ("s3", S3_TLS):
        s3 = request.getfixturevalue("s3" if store == "s3" else "s3_tls")
        fleet = s3_fleet(start, s3, request.getfixturevalue("redis"))
        return StoreServer(store, fleet.a, fleet.assert_holds)
    if store == "azure":
        azurite: AzuriteServer = request.getfixturevalue("azurite")
        container = unique_container()
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
        tusd = start("--azure-container", container, "--azure-endpoint", azurite.endpoint)

        def one_blob_and_its_info(url: str, source: SourceFile) -> None:
            final = upload_id(url)
            assert blob_names(azurite, container) == [final, f"{final}.info"]

        return StoreServer(store, tusd, one_blob_and_its_info)
    raise ValueError(f"no store {store!r}; the stores are {STORES}")
