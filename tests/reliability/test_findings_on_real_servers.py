"""Issue 14's fixed findings, against a real server process (their first tests are in process).

Finding 4 (--cors-credentials without origins refuses to start) is tests/ops/test_config_errors.py
and finding 9 (forwarded headers only with --behind-proxy) is tests/ops/test_proxy_headers.py,
both already on real processes. Finding 1 is the storms of test_load_and_abuse.py, finding 2 its
bad hook receiver, finding 5 its memory figures, finding 13 its HEADs of one upload during a
stalled PATCH.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from tests.reliability.rawhttp import request
from tests.reliability.setups import SETUPS, Setup, make_setup
from tests.support.hook_receiver import start_receiver
from tests.support.servers import RedisServer, S3Server
from tests.support.socket_http import RawHTTP
from tests.support.tus_requests import wait_until
from tests.support.tusd_process import TusdProcess

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


@pytest.fixture(params=SETUPS)
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, redis: RedisServer, s3: S3Server
) -> Setup:
    return make_setup(request.param, tmp_path, redis, s3)


def with_body(data: bytes, **headers: str) -> dict[str, str]:
    return {**TUS, "Upload-Length": str(len(data)), "Content-Type": OCTETS, **headers}


def sha1(data: bytes) -> str:
    return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()


async def content(client: httpx.AsyncClient, url: str) -> tuple[int, bytes]:
    response = await client.get(url, headers=TUS)
    return response.status_code, response.content


async def test_3_a_hook_chosen_id_never_replaces_an_upload_on_s3_and_redis(
    tmp_path: Path, redis: RedisServer, s3: S3Server
) -> None:
    """Finding 3: a pre-create HTTP hook whose ChangeFileInfo.ID names a finished upload gets
    409; that upload's bytes, object and state are as they were."""
    setup = make_setup("s3+redis", tmp_path, redis, s3)
    receiver, runner = await start_receiver()
    args = (*setup.args, "--hooks-http", receiver.url, "--hooks-enabled-events", "pre-create")
    server = await asyncio.to_thread(TusdProcess, setup.upload_dir, args)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            first = await client.post(server.endpoint, headers=with_body(b"abc"), content=b"abc")
            assert first.status_code == 201 and first.headers["Upload-Offset"] == "3", first.text
            url = first.headers["Location"]
            taken = url.rstrip("/").rsplit("/", 1)[-1]
            before = setup.stored()
            receiver.answer("pre-create", body={"ChangeFileInfo": {"ID": taken}})
            again = await client.post(server.endpoint, headers=with_body(b"xyz"), content=b"xyz")
            assert again.status_code == 409, again.text
            assert "already exists" in again.text
            assert await content(client, url) == (200, b"abc")
            head = await client.head(url, headers=TUS)
            assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == "3"
            assert setup.stored() == before
            assert len(receiver.of("pre-create")) == 2
    finally:
        receiver.release()
        await asyncio.to_thread(server.stop)
        await runner.cleanup()
    assert "Traceback" not in server.output


async def test_8_a_get_with_a_method_override_changes_nothing(setup: Setup) -> None:
    """Finding 8: GET with X-HTTP-Method-Override DELETE or PATCH is a GET; with POST on the
    endpoint it creates nothing."""
    with setup.server() as server:
        async with httpx.AsyncClient(timeout=30) as client:
            created = await client.post(server.endpoint, headers=with_body(b"abc"), content=b"abc")
            assert created.status_code == 201, created.text
            url = created.headers["Location"]
            before = setup.stored()
            for override in ("DELETE", "PATCH"):
                response = await client.get(
                    url, headers={**TUS, "X-HTTP-Method-Override": override, "Upload-Offset": "3"}
                )
                assert (response.status_code, response.content) == (200, b"abc"), override
            response = await client.get(
                server.endpoint,
                headers={**TUS, "X-HTTP-Method-Override": "POST", "Upload-Length": "5"},
            )
            assert response.status_code != 201 and "Location" not in response.headers
            assert (await client.head(url, headers=TUS)).headers["Upload-Offset"] == "3"
            assert setup.stored() == before


def test_10_a_path_cannot_forge_a_log_line(tmp_path: Path) -> None:
    """Finding 10: %0a, %0d%0a and an escape in a request path stay inside the access log line
    of that request, in the server's real output."""
    forged = "2026-01-01%2000:00:00,000%20ERROR%20tusd_py:%20FORGED"
    server = TusdProcess(tmp_path / "uploads", ())
    try:
        port = int(re.findall(r":(\d+)/", server.endpoint)[0])
        for target in (
            f"/files/x%0a{forged}",
            f"/files/y%0d%0a{forged}",
            f"/files/z%1b%0a{forged}",
        ):
            assert request(port, "GET", target).status == 404
        deadline = time.monotonic() + 5  # access lines are written after the answers
        while sum("FORGED" in line for line in server.lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
    lines = [line for line in server.lines if "FORGED" in line]
    assert len(lines) == 3, server.output
    assert all("INFO tusd_py.access: GET /files/" in line for line in lines), lines
    assert not any(line.startswith(("2026-01-01", " ERROR")) for line in server.lines)
    assert not any("\x1b" in line or "\r" in line for line in server.lines), lines


async def partial(client: httpx.AsyncClient, endpoint: str, data: bytes, *, finish: bool) -> str:
    headers = {**TUS, "Upload-Length": str(len(data)), "Upload-Concat": "partial"}
    created = await client.post(endpoint, headers=headers)
    assert created.status_code == 201, created.text
    url = str(created.headers["Location"])
    if finish:
        assert (await patch(client, url, data)).status_code == 204
    return url


async def patch(client: httpx.AsyncClient, url: str, data: bytes) -> httpx.Response:
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": OCTETS}
    return await client.patch(url, headers=headers, content=data)


async def final(client: httpx.AsyncClient, endpoint: str, *urls: str) -> httpx.Response:
    paths = " ".join(httpx.URL(url).path for url in urls)
    return await client.post(endpoint, headers={**TUS, "Upload-Concat": "final;" + paths})


async def test_7_a_final_of_thousands_of_ids_is_refused_before_any_lock(setup: Setup) -> None:
    """Finding 7: `Upload-Concat: final;` with 10,000 ids whose first does not exist is a 404
    within a fraction of the old 8-18 s (every id was locked before the first lookup); one id
    over --max-concat-parts is a 400 naming the limit. The real partials named are untouched."""
    with setup.server("--max-concat-parts", "10000", "--max-header-size", "1MiB") as server:
        endpoint = server.endpoint
        async with httpx.AsyncClient(timeout=60) as client:
            real = [await partial(client, endpoint, b"%d" % n * 100, finish=True) for n in range(3)]
            unknown = [f"/files/{secrets.token_hex(16)}" for _ in range(10_000 - len(real))]
            # Warm up (connections to Redis and S3, lazy imports): the figure is the request's own.
            assert (await final(client, endpoint, unknown[-1])).status_code == 404
            started = time.monotonic()
            refused = await final(client, endpoint, *unknown, *real)
            took = time.monotonic() - started
            assert refused.status_code == 404, refused.text
            assert unknown[0].rsplit("/", 1)[1] in refused.text
            assert took < 2.0, f"a 404 for 10,000 ids took {took:.2f} s"

            over = await final(client, endpoint, *unknown, *real, f"/files/{secrets.token_hex(16)}")
            assert over.status_code == 400, over.text
            assert "at most 10000 (--max-concat-parts)" in over.text

            made = await final(client, endpoint, *real)
            assert made.status_code == 201, made.text
            expected = b"".join(b"%d" % n * 100 for n in range(3))
            assert await content(client, made.headers["Location"]) == (200, expected)
    assert "Traceback" not in server.output


async def test_11_concatenation_lifecycle(setup: Setup) -> None:
    """Finding 11: a partial claimed by an unfinished final cannot be deleted (409), and the
    final assembles once the partial is finished; deleting an unassembled final frees its
    partials, which can then be deleted, leaving nothing."""
    parts = [b"a" * 3000, b"b" * 2000]
    with setup.server() as server:
        endpoint = server.endpoint
        async with httpx.AsyncClient(timeout=30) as client:
            urls = [
                await partial(client, endpoint, parts[0], finish=True),
                await partial(client, endpoint, parts[1], finish=False),
            ]
            made = await final(client, endpoint, *urls)
            assert made.status_code == 201, made.text
            for claimed in urls:
                refused = await client.delete(claimed, headers=TUS)
                assert refused.status_code == 409, refused.text
            assert (await patch(client, urls[1], parts[1])).status_code == 204
            assert await content(client, made.headers["Location"]) == (200, b"".join(parts))

            before = setup.stored()
            spares = [
                await partial(client, endpoint, b"xyz", finish=True),
                await partial(client, endpoint, b"uvw", finish=False),
            ]
            unassembled = await final(client, endpoint, *spares)
            assert unassembled.status_code == 201, unassembled.text
            deleted = await client.delete(unassembled.headers["Location"], headers=TUS)
            assert deleted.status_code == 204, deleted.text
            for spare in spares:
                assert (await client.delete(spare, headers=TUS)).status_code == 204
            assert setup.stored() == before
    assert "Traceback" not in server.output


async def test_12_a_wrong_checksum_on_creation_with_upload_leaves_nothing(setup: Setup) -> None:
    """Finding 12: creation-with-upload with a wrong Upload-Checksum is 460 and leaves no file,
    object or Redis key; with the right one it is 201 and the bytes are stored."""
    data = bytes(range(256)) * 200
    with setup.server() as server:
        async with httpx.AsyncClient(timeout=30) as client:
            before = setup.stored()
            wrong = await client.post(
                server.endpoint,
                headers=with_body(data, **{"Upload-Checksum": sha1(b"other")}),
                content=data,
            )
            assert wrong.status_code == 460, wrong.text
            assert setup.stored() == before
            right = await client.post(
                server.endpoint,
                headers=with_body(data, **{"Upload-Checksum": sha1(data)}),
                content=data,
            )
            assert right.status_code == 201 and right.headers["Upload-Offset"] == str(len(data))
            assert await content(client, right.headers["Location"]) == (200, data)
    assert "Traceback" not in server.output


def chunked(
    method: str, url: str, headers: Mapping[str, str | int], *pieces: bytes, pause: float = 0.3
) -> RawHTTP:
    """A request with a chunked body whose raw `pieces` go out `pause` seconds apart."""
    conn = RawHTTP(url)
    conn.send_head(
        method, {**TUS, "Content-Type": OCTETS, "Transfer-Encoding": "chunked", **headers}
    )
    for n, piece in enumerate(pieces):
        if n:
            time.sleep(pause)
        conn.send(piece)
    return conn


def offset_of(url: str) -> str:
    return httpx.head(url, headers=TUS, timeout=30).headers["Upload-Offset"]


def test_14_a_chunked_patch_refused_for_bad_framing_commits_nothing(setup: Setup) -> None:
    """Finding 14: a chunked PATCH whose framing breaks after its first chunk has arrived is
    answered 400 by uvicorn and commits none of its bytes (it committed that chunk before), and
    such a creation-with-upload leaves nothing; a chunked PATCH whose client goes away keeps
    the bytes received (tus's resume model)."""
    data = bytes(range(256)) * 40
    first = b"%x\r\n%s\r\n" % (1000, data[:1000])
    length = {"Upload-Length": len(data)}
    with setup.server() as server:
        before = setup.stored()
        with chunked("POST", server.endpoint, length, first, b"ZZ\r\n") as conn:
            assert conn.read_response().status == 400
        # uvicorn answers before the app has seen the refusal: the app's undoing follows.
        assert wait_until(lambda: setup.stored() == before, 10), setup.stored() - before

        url = httpx.post(server.endpoint, headers={**TUS, "Upload-Length": str(len(data))}).headers[
            "Location"
        ]
        at_0 = {"Upload-Offset": 0}
        for broken in (b"ZZ\r\n" + data[1000:1010] + b"\r\n0\r\n\r\n", b"10\r\n" + b"x" * 40):
            with chunked("PATCH", url, at_0, first, broken) as conn:
                assert conn.read_response().status == 400
            assert offset_of(url) == "0"

        with chunked("PATCH", url, at_0, first):  # the client goes away after one chunk
            time.sleep(0.3)
        assert wait_until(lambda: offset_of(url) == "1000", 10), offset_of(url)

        rest = httpx.patch(
            url,
            headers={**TUS, "Upload-Offset": "1000", "Content-Type": OCTETS},
            content=data[1000:],
            timeout=30,
        )
        assert rest.status_code == 204, rest.text
        stored = httpx.get(url, headers=TUS, timeout=30)
        assert (stored.status_code, stored.content) == (200, data)
    assert "Traceback" not in server.output
    refusals = [line for line in server.lines if "tusd_py.access: " in line and " 400 " in line]
    assert len(refusals) == 3, server.output
