"""GET: serving a finished upload back, safely."""

from __future__ import annotations

import httpx
import pytest

from tests.protocol.helpers import TUS, assert_plain_error, b64, create, patch, upload

DATA = b"0123456789"


async def test_download_needs_no_tus_headers(client: httpx.AsyncClient) -> None:
    url = await upload(client, DATA)
    response = await client.get(url)
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["Content-Length"] == "10"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_download_with_tus_resumable_works_too(client: httpx.AsyncClient) -> None:
    url = await upload(client, DATA)
    assert (await client.get(url, headers=TUS)).content == DATA


async def test_download_of_a_large_upload_is_complete(client: httpx.AsyncClient) -> None:
    data = bytes(range(251)) * 8000  # ~2 MB, several read chunks
    url = await upload(client, data)
    response = await client.get(url)
    assert response.headers["Content-Length"] == str(len(data))
    assert response.content == data


async def test_unfinished_upload_is_409(client: httpx.AsyncClient) -> None:
    url = await create(client, 10)
    await patch(client, url, 0, b"01234")
    assert_plain_error(await client.get(url), 409)


async def test_unknown_upload_is_404(client: httpx.AsyncClient) -> None:
    assert_plain_error(await client.get("/files/0123456789abcdef"), 404)


@pytest.mark.parametrize(
    ("header", "body", "content_range"),
    [
        ("bytes=0-0", b"0", "bytes 0-0/10"),  # the first byte
        ("bytes=9-9", b"9", "bytes 9-9/10"),  # the last byte
        ("bytes=-1", b"9", "bytes 9-9/10"),  # the last byte as a suffix
        ("bytes=-3", b"789", "bytes 7-9/10"),
        ("bytes=-100", DATA, "bytes 0-9/10"),  # a suffix longer than the upload
        ("bytes=4-", b"456789", "bytes 4-9/10"),  # open-ended
        ("bytes=2-5", b"2345", "bytes 2-5/10"),
        ("bytes=8-1000", b"89", "bytes 8-9/10"),  # end past the size is clamped
    ],
)
async def test_range(
    client: httpx.AsyncClient, header: str, body: bytes, content_range: str
) -> None:
    url = await upload(client, DATA)
    response = await client.get(url, headers={"Range": header})
    assert response.status_code == 206
    assert response.content == body
    assert response.headers["Content-Range"] == content_range
    assert response.headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=10-20", "bytes=100-", "bytes=-0"])
async def test_unsatisfiable_range_is_416(client: httpx.AsyncClient, header: str) -> None:
    url = await upload(client, DATA)
    response = await client.get(url, headers={"Range": header})
    assert_plain_error(response, 416)
    assert response.headers["Content-Range"] == "bytes */10"


@pytest.mark.parametrize(
    "header", ["bytes=5-2", "items=0-1", "bytes=", "bytes=0-1,4-5", "bytes=a-b", "garbage", ""]
)
async def test_unusable_range_sends_everything(client: httpx.AsyncClient, header: str) -> None:
    url = await upload(client, DATA)
    response = await client.get(url, headers={"Range": header})
    assert response.status_code == 200
    assert response.content == DATA


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=-5", "bytes=0-0"])
async def test_range_on_an_empty_upload_never_answers_an_invalid_range(
    client: httpx.AsyncClient, header: str
) -> None:
    url = await upload(client, b"")
    response = await client.get(url, headers={"Range": header})
    assert response.status_code in (200, 416)
    if response.status_code == 416:
        assert response.headers["Content-Range"] == "bytes */0"
    else:
        assert response.content == b""
        assert "Content-Range" not in response.headers


async def test_absurdly_long_range_numbers_are_not_a_server_error(
    client: httpx.AsyncClient,
) -> None:
    url = await upload(client, DATA)
    for header in ("bytes=" + "1" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000):
        response = await client.get(url, headers={"Range": header})
        assert response.status_code in (200, 206, 416), (header[:20], response.status_code)


@pytest.mark.parametrize(
    ("filetype", "expected"),
    [
        ("image/png", "image/png"),
        ("video/mp4", "video/mp4"),
        ("application/pdf", "application/pdf"),
        ("IMAGE/PNG", "image/png"),
        ("not a type", "application/octet-stream"),
        ("text/plain\r\nX-Evil: 1", "application/octet-stream"),
        ("image/", "application/octet-stream"),
        ("", "application/octet-stream"),
    ],
)
async def test_content_type_comes_from_valid_filetype_metadata(
    client: httpx.AsyncClient, filetype: str, expected: str
) -> None:
    url = await upload(client, DATA, metadata=f"filetype {b64(filetype)}")
    response = await client.get(url)
    assert response.headers["Content-Type"].split(";")[0] == expected
    assert "X-Evil" not in response.headers


@pytest.mark.parametrize("filetype", ["image/png", "text/plain", "video/webm", "audio/mpeg"])
async def test_inert_types_are_inline(client: httpx.AsyncClient, filetype: str) -> None:
    url = await upload(client, DATA, metadata=f"filetype {b64(filetype)}")
    disposition = (await client.get(url)).headers["Content-Disposition"]
    assert disposition.split(";")[0] == "inline"


@pytest.mark.parametrize(
    "filetype",
    [
        "text/html",
        "image/svg+xml",
        "application/xhtml+xml",
        "text/javascript",
        "application/javascript",
        "text/xml",
        "application/octet-stream",
        "multipart/x-mixed-replace",
    ],
)
async def test_active_content_is_an_attachment(client: httpx.AsyncClient, filetype: str) -> None:
    url = await upload(client, b"<script>alert(1)</script>", metadata=f"filetype {b64(filetype)}")
    response = await client.get(url)
    assert response.headers["Content-Disposition"].split(";")[0] == "attachment"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]


async def test_filename_is_offered(client: httpx.AsyncClient) -> None:
    url = await upload(client, DATA, metadata=f"filename {b64('report.pdf')}")
    disposition = (await client.get(url)).headers["Content-Disposition"]
    assert 'filename="report.pdf"' in disposition


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ('say "hi".txt', "say%20%22hi%22.txt"),
        ("back\\slash.txt", "back%5Cslash.txt"),
        ("naïve café.txt", "na%C3%AFve%20caf%C3%A9.txt"),
        ("日本語.pdf", "%E6%97%A5%E6%9C%AC%E8%AA%9E.pdf"),
        ("line\r\nbreak.txt", "line%0D%0Abreak.txt"),
        ("semi;colon=x.txt", "semi%3Bcolon%3Dx.txt"),
    ],
)
async def test_filename_is_escaped(client: httpx.AsyncClient, name: str, encoded: str) -> None:
    url = await upload(client, DATA, metadata=f"filename {b64(name)}")
    response = await client.get(url)
    disposition = response.headers["Content-Disposition"]
    assert f"filename*=UTF-8''{encoded}" in disposition
    plain = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert plain.isascii()
    assert all(32 <= ord(c) < 127 and c not in '"\\' for c in plain)
    assert "\r" not in disposition and "\n" not in disposition


async def test_download_after_a_deferred_length_is_declared(client: httpx.AsyncClient) -> None:
    url = await create(client, None)
    await patch(client, url, 0, b"abc")
    await patch(client, url, 3, b"de", **{"Upload-Length": "5"})
    response = await client.get(url)
    assert response.content == b"abcde"
    assert response.headers["Content-Length"] == "5"
