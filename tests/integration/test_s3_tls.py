"""S3 over HTTPS against moto started with a certificate from the session's own CA (issue 17).

Verification is on everywhere: the server trusts that CA only when told (`--s3-ca-bundle`, or
botocore's `AWS_CA_BUNDLE`); a bundle of another CA leaves it not ready, saying why. And
`--s3-download redirect`: a finished upload's GET is a 302 to a presigned GetObject URL that
serves the bytes (a Range too) with the proxy GET's Content-Type and Content-Disposition.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.s3_client import new_bucket, s3_client
from tests.support.servers import S3_ENV, S3Server
from tests.support.tls import make_ca
from tests.support.tus_requests import TUS, download_sha256, upload_whole, wait_until
from tests.support.tusd_process import TusdProcess
from tusd_py.app import create_app
from tusd_py.config import Config
from tusd_py.hooks import HookEvent, HookResponse

MiB = 1024 * 1024


def ready_url(tusd: TusdProcess) -> str:
    return tusd.endpoint.removesuffix("files/") + "ready"


def server_args(s3: S3Server, bucket: str, *extra: str) -> tuple[str, ...]:
    return (
        "--s3-bucket", bucket, "--s3-endpoint", s3.endpoint,
        "--s3-region", S3_ENV["AWS_DEFAULT_REGION"], *extra,
    )  # fmt: skip


@contextlib.contextmanager
def started(tmp_path: Path, args: tuple[str, ...], env: dict[str, str] | None = None) -> Any:
    tusd = TusdProcess(tmp_path / "uploads", args, env=env)
    try:
        yield tusd
    finally:
        tusd.stop()
        print("--- server output\n" + tusd.output)


def test_a_ca_bundle_of_another_ca_is_not_ready_and_says_tls(
    s3_tls: S3Server, tmp_path: Path
) -> None:
    wrong = make_ca(tmp_path / "other-ca")
    bucket = new_bucket(s3_tls)
    args = server_args(s3_tls, bucket, "--s3-ca-bundle", str(wrong.ca_cert))
    with started(tmp_path, args) as tusd:
        ready = httpx.get(ready_url(tusd), timeout=30)
        assert ready.status_code == 503, ready.text
        assert "TLS with the S3 endpoint" in ready.text
        assert "could not be verified" in ready.text and "--s3-ca-bundle" in ready.text
        assert wait_until(lambda: "not ready: storage: TLS" in tusd.output, timeout=10)
    warnings = [line for line in tusd.output.splitlines() if "not ready: storage: TLS" in line]
    assert warnings and "WARNING" in warnings[0], tusd.output


def test_aws_ca_bundle_is_honoured(s3_tls: S3Server, tmp_path: Path) -> None:
    bucket = new_bucket(s3_tls)
    assert s3_tls.ca_bundle is not None
    data = random.Random(3).randbytes(6 * MiB + 7)
    with started(
        tmp_path, server_args(s3_tls, bucket), env={"AWS_CA_BUNDLE": s3_tls.ca_bundle}
    ) as tusd:
        ready = httpx.get(ready_url(tusd), timeout=30)
        assert ready.status_code == 200, ready.text
        url = upload_whole(tusd.endpoint, data)
        assert download_sha256(url) == (len(data), hashlib.sha256(data).hexdigest())
    assert "Traceback" not in tusd.output


def test_without_the_ca_the_server_is_not_ready(s3_tls: S3Server, tmp_path: Path) -> None:
    """Verification is on by default: the system's CAs do not include the test CA."""
    bucket = new_bucket(s3_tls)
    with started(tmp_path, server_args(s3_tls, bucket)) as tusd:
        ready = httpx.get(ready_url(tusd), timeout=30)
        assert ready.status_code == 503 and "TLS with the S3 endpoint" in ready.text


# -- --s3-download redirect ------------------------------------------------------------------


def encoded(**metadata: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())


@contextlib.asynccontextmanager
async def redirecting_app(
    s3: S3Server,
    tmp_path: Path,
    *,
    bucket: str | None = None,
    download: Literal["proxy", "redirect"] = "redirect",
    **options: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(
        upload_dir=str(tmp_path / "uploads"),
        s3_bucket=bucket or new_bucket(s3),
        s3_endpoint=s3.endpoint,
        s3_region=S3_ENV["AWS_DEFAULT_REGION"],
        s3_ca_bundle=s3.ca_bundle,
        s3_download=download,
        s3_download_expiry=60,
    )
    app = create_app(config, **options)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://tus.test"
        ) as client,
    ):
        yield client
    await asyncio.sleep(0.3)  # closed TLS connections finish shutting down (protocol conftest)


async def create_and_send(
    client: httpx.AsyncClient, data: bytes, length: int | None = None, **metadata: str
) -> str:
    headers = {**TUS, "Upload-Length": str(len(data) if length is None else length)}
    if metadata:
        headers["Upload-Metadata"] = encoded(**metadata)
    created = await client.post("/files/", headers=headers)
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    patched = await client.patch(
        url,
        content=data,
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert patched.status_code == 204, patched.text
    return url


async def test_a_finished_upload_redirects_to_a_presigned_url_that_serves_it(
    s3_tls: S3Server, tmp_path: Path
) -> None:
    data = random.Random(5).randbytes(6 * MiB + 3)
    async with redirecting_app(s3_tls, tmp_path) as client:
        url = await create_and_send(
            client, data, filename='résumé "v2".pdf', filetype="application/pdf"
        )
        answer = await client.get(url)
        assert answer.status_code == 302, answer.text
        assert answer.headers["Cache-Control"] == "no-store"
        location = answer.headers["Location"]
        query = parse_qs(urlsplit(location).query)
        assert location.startswith(s3_tls.endpoint + "/")
        assert query["response-content-type"] == ["application/pdf"]
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]  # SigV4, not botocore's V2
        assert query["X-Amz-Expires"] == ["60"]
        assert "response-content-disposition" in query

        trust = ssl.create_default_context(cafile=s3_tls.ca_bundle)
        async with httpx.AsyncClient(verify=trust, timeout=60) as s3_http:
            whole = await s3_http.get(location)
            assert whole.status_code == 200
            assert hashlib.sha256(whole.content).digest() == hashlib.sha256(data).digest()
            assert whole.headers["Content-Type"] == "application/pdf"
            assert whole.headers["Content-Disposition"] == (
                'inline; filename="r_sum_ _v2_.pdf"; '
                "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
            )
            part = await s3_http.get(location, headers={"Range": "bytes=5000000-"})
            assert part.status_code == 206
            assert part.headers["Content-Range"] == f"bytes 5000000-{len(data) - 1}/{len(data)}"
            assert part.content == data[5000000:]
            # (moto does not check signatures, so a tampered URL is not tested here: SigV4 signs
            # every query parameter, response-content-* included.)

            # Following the redirect from the tus URL, as a browser or httpx does, keeps the Range.
            followed = httpx.AsyncClient(
                transport=_Router(client, s3_http), base_url="http://tus.test"
            )
            async with followed:
                ranged = await followed.get(
                    url, headers={"Range": "bytes=10-19"}, follow_redirects=True
                )
            assert ranged.status_code == 206 and ranged.content == data[10:20]


@pytest.mark.parametrize(
    "filetype", ["text/html", "text/plain", "image/svg+xml", "application/pdf", "image/png", ""]
)
async def test_the_presigned_url_answers_with_the_proxied_gets_content_headers(
    s3_tls: S3Server, tmp_path: Path, filetype: str
) -> None:
    """S3 sets only what the URL signs (`response-content-*`): the type and disposition must be
    the proxied GET's exactly, attachment for anything a browser could run. The rest of the
    proxied GET's headers (nosniff, CSP) S3 cannot send (docs/s3.md)."""
    bucket = new_bucket(s3_tls)
    metadata = {"filename": "a.bin", **({"filetype": filetype} if filetype else {})}
    trust = ssl.create_default_context(cafile=s3_tls.ca_bundle)
    async with (
        redirecting_app(s3_tls, tmp_path, bucket=bucket) as redirecting,
        redirecting_app(s3_tls, tmp_path, bucket=bucket, download="proxy") as proxying,
        httpx.AsyncClient(verify=trust, timeout=60) as s3_http,
    ):
        url = await create_and_send(redirecting, b"<script>alert(1)</script>", None, **metadata)
        proxied = await proxying.get(url)
        assert proxied.status_code == 200, proxied.text
        answer = await redirecting.get(url)
        assert answer.status_code == 302, answer.text
        direct = await s3_http.get(answer.headers["Location"])
    assert direct.status_code == 200 and direct.content == proxied.content
    for name in ("Content-Type", "Content-Disposition"):
        assert direct.headers[name] == proxied.headers[name], name
    assert proxied.headers["Content-Disposition"].startswith(
        "inline" if filetype in ("text/plain", "application/pdf", "image/png") else "attachment"
    )


class _Router(httpx.AsyncBaseTransport):
    """The tus app for http://tus.test, the real network (moto over HTTPS) for the rest."""

    def __init__(self, app_client: httpx.AsyncClient, network: httpx.AsyncClient) -> None:
        self.app_client = app_client
        self.network = network

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self.app_client if request.url.host == "tus.test" else self.network
        response = await target.send(request, stream=True)
        await response.aread()
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )


async def test_redirect_leaves_unfinished_uploads_and_head_as_they_were(
    s3_tls: S3Server, tmp_path: Path
) -> None:
    async with redirecting_app(s3_tls, tmp_path) as client:
        url = await create_and_send(client, b"abc", length=10)
        unfinished = await client.get(url)
        assert unfinished.status_code == 409, unfinished.text
        assert "Location" not in unfinished.headers
        head = await client.head(url, headers=TUS)
        assert head.status_code == 200 and head.headers["Upload-Offset"] == "3"


async def test_the_pre_access_hook_refuses_before_any_redirect(
    s3_tls: S3Server, tmp_path: Path
) -> None:
    refuse = False

    def pre_access(event: HookEvent) -> HookResponse | None:
        return HookResponse(reject_access=True) if refuse else None

    async with redirecting_app(s3_tls, tmp_path, hooks={"pre-access": pre_access}) as client:
        url = await create_and_send(client, b"hello")
        refuse = True
        refused = await client.get(url)
        assert refused.status_code == 403 and "Location" not in refused.headers
        refuse = False
        assert (await client.get(url)).status_code == 302


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_the_addressing_style_reaches_botocore(style: str, tmp_path: Path) -> None:
    from tusd_py.stores.s3 import S3Store

    store = S3Store.from_config(
        Config(
            upload_dir=str(tmp_path),
            s3_bucket="b-x",
            s3_endpoint="https://s3.example.test",
            s3_addressing_style=style,  # type: ignore[arg-type]
        )
    )
    assert store.client._config.s3["addressing_style"] == style


def test_test_ca_client_reads_the_bucket(s3_tls: S3Server) -> None:
    """The tests' own client verifies moto's certificate against the session's CA."""
    bucket = new_bucket(s3_tls)
    s3_client(s3_tls).put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3_client(s3_tls).get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
