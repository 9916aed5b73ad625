"""The checksum extension: Upload-Checksum on PATCH, verified while the body streams."""

from __future__ import annotations

import base64
import hashlib
import random
import zlib

import httpx
import pytest

from tests.protocol.conftest import TusServer
from tests.protocol.helpers import (
    OCTET,
    TUS,
    assert_plain_error,
    chunked,
    create,
    head,
    patch,
)

ALGORITHMS = ["sha1", "md5", "sha256", "sha512", "crc32"]
MiB = 1024 * 1024


def digest(algorithm: str, data: bytes) -> str:
    if algorithm == "crc32":
        raw = zlib.crc32(data).to_bytes(4, "big")
    else:
        raw = hashlib.new(algorithm, data).digest()
    return base64.b64encode(raw).decode()


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {digest(algorithm, data)}"


async def download_sha256(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(url, headers=TUS)
    assert response.status_code == 200, response.text
    return hashlib.sha256(response.content).hexdigest()


async def test_options_advertises_checksum_and_algorithms(client: httpx.AsyncClient) -> None:
    response = await client.options("/files/")
    assert "checksum" in response.headers["Tus-Extension"].split(",")
    assert "checksum-trailer" not in response.headers["Tus-Extension"].split(",")
    assert response.headers["Tus-Checksum-Algorithm"].split(",") == ALGORITHMS


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_good_checksum_is_committed(client: httpx.AsyncClient, algorithm: str) -> None:
    data = random.Random(1).randbytes(100_000)
    url = await create(client, len(data))
    first, second = data[:40_000], data[40_000:]
    response = await patch(client, url, 0, first, **{"Upload-Checksum": checksum(algorithm, first)})
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(first))
    response = await patch(
        client, url, len(first), second, **{"Upload-Checksum": checksum(algorithm, second)}
    )
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    assert await download_sha256(client, url) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_bad_checksum_is_460_commits_nothing_and_retry_completes(
    client: httpx.AsyncClient, algorithm: str
) -> None:
    data = random.Random(2).randbytes(70_000)
    url = await create(client, len(data))
    assert (await patch(client, url, 0, data[:10_000])).status_code == 204

    corrupted = bytearray(data[10_000:])
    corrupted[123] ^= 0xFF
    response = await patch(
        client,
        url,
        10_000,
        bytes(corrupted),
        **{"Upload-Checksum": checksum(algorithm, data[10_000:])},
    )
    assert_plain_error(response, 460)
    assert "nothing of it was stored" in response.text
    assert (await head(client, url)).headers["Upload-Offset"] == "10000"

    response = await patch(
        client,
        url,
        10_000,
        data[10_000:],
        **{"Upload-Checksum": checksum(algorithm, data[10_000:])},
    )
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    assert await download_sha256(client, url) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_bad_checksum_on_a_streamed_multi_mib_body(server: TusServer, algorithm: str) -> None:
    """Bytes that reached the store before the mismatch showed are discarded (S3: parts)."""
    client = server.client
    data = random.Random(3).randbytes(12 * MiB + 5)
    url = await create(client, len(data))
    bad = bytearray(data)
    bad[-1] ^= 0x01
    pieces = [bytes(bad[i : i + MiB]) for i in range(0, len(bad), MiB)]
    response = await client.patch(
        url,
        headers={
            **TUS,
            "Content-Type": OCTET,
            "Upload-Offset": "0",
            "Upload-Checksum": checksum(algorithm, data),
        },
        content=chunked(*pieces),
    )
    assert_plain_error(response, 460)
    state = await head(client, url)
    assert state.headers["Upload-Offset"] == "0"

    response = await patch(client, url, 0, data, **{"Upload-Checksum": checksum(algorithm, data)})
    assert response.status_code == 204, response.text
    assert await download_sha256(client, url) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "header",
    ["sha3 AAAA", "crc64 AAAAAAAAAAA=", "whirlpool " + base64.b64encode(b"x" * 64).decode()],
)
async def test_unknown_algorithm_is_400_before_any_byte(
    client: httpx.AsyncClient, header: str
) -> None:
    url = await create(client, 10)
    response = await patch(client, url, 0, b"0123456789", **{"Upload-Checksum": header})
    assert_plain_error(response, 400)
    assert "sha1" in response.text  # says what is supported
    assert (await head(client, url)).headers["Upload-Offset"] == "0"


@pytest.mark.parametrize(
    "header",
    ["sha1", "sha1 ", "sha1 not-base64!", "sha1 " + base64.b64encode(b"short").decode(), "md5"],
)
async def test_malformed_checksum_is_400(client: httpx.AsyncClient, header: str) -> None:
    url = await create(client, 10)
    response = await patch(client, url, 0, b"0123456789", **{"Upload-Checksum": header})
    assert_plain_error(response, 400)
    assert (await head(client, url)).headers["Upload-Offset"] == "0"


async def test_algorithm_name_is_case_insensitive(client: httpx.AsyncClient) -> None:
    data = b"hello checksum"
    url = await create(client, len(data))
    response = await patch(
        client, url, 0, data, **{"Upload-Checksum": "SHA256 " + digest("sha256", data)}
    )
    assert response.status_code == 204, response.text


async def test_checksum_of_a_deferred_length_upload(client: httpx.AsyncClient) -> None:
    data = random.Random(4).randbytes(3000)
    url = await create(client, None)
    response = await patch(
        client, url, 0, data[:1000], **{"Upload-Checksum": checksum("sha1", data[:1000])}
    )
    assert response.status_code == 204
    response = await patch(
        client,
        url,
        1000,
        data[1000:],
        **{"Upload-Checksum": checksum("sha1", data[1000:]), "Upload-Length": "3000"},
    )
    assert response.status_code == 204, response.text
    assert await download_sha256(client, url) == hashlib.sha256(data).hexdigest()


async def test_empty_body_with_checksum(client: httpx.AsyncClient) -> None:
    url = await create(client, 5)
    response = await patch(client, url, 0, b"", **{"Upload-Checksum": checksum("md5", b"")})
    assert response.status_code == 204
    response = await patch(client, url, 0, b"", **{"Upload-Checksum": checksum("md5", b"x")})
    assert_plain_error(response, 460)
    assert (await head(client, url)).headers["Upload-Offset"] == "0"


async def test_bad_checksum_mid_part_then_retry(server: TusServer) -> None:
    """A committed tail (S3: `.part`) survives a failed PATCH that filled and uploaded parts."""
    client = server.client
    data = random.Random(5).randbytes(15 * MiB + 77)
    url = await create(client, len(data))
    head_bytes = 3 * MiB + 1
    response = await patch(
        client, url, 0, data[:head_bytes], **{"Upload-Checksum": checksum("md5", data[:head_bytes])}
    )
    assert response.status_code == 204
    rest = data[head_bytes:]
    bad = bytearray(rest)
    bad[len(bad) // 2] ^= 0x10
    pieces = [bytes(bad[i : i + MiB]) for i in range(0, len(bad), MiB)]
    response = await client.patch(
        url,
        headers={
            **TUS,
            "Content-Type": OCTET,
            "Upload-Offset": str(head_bytes),
            "Upload-Checksum": checksum("sha256", rest),
        },
        content=chunked(*pieces),
    )
    assert_plain_error(response, 460)
    assert (await head(client, url)).headers["Upload-Offset"] == str(head_bytes)
    response = await patch(
        client, url, head_bytes, rest, **{"Upload-Checksum": checksum("sha256", rest)}
    )
    assert response.status_code == 204, response.text
    assert await download_sha256(client, url) == hashlib.sha256(data).hexdigest()


async def test_checksum_announced_as_trailer_is_400(client: httpx.AsyncClient) -> None:
    url = await create(client, 3)
    response = await patch(client, url, 0, b"abc", Trailer="Upload-Checksum")
    assert_plain_error(response, 400)
    assert "trailer" in response.text
    assert (await head(client, url)).headers["Upload-Offset"] == "0"


async def test_checksum_on_creation_with_upload(server: TusServer) -> None:
    data = random.Random(5).randbytes(50_000)
    headers = {**TUS, "Content-Type": OCTET, "Upload-Length": str(len(data))}
    before = server.stored_names()
    wrong = await server.client.post(
        "/files/", headers={**headers, "Upload-Checksum": checksum("sha1", b"other")}, content=data
    )
    assert_plain_error(wrong, 460)
    assert server.stored_names() == before, "the refused creation left nothing behind"
    right = await server.client.post(
        "/files/", headers={**headers, "Upload-Checksum": checksum("sha1", data)}, content=data
    )
    assert right.status_code == 201, right.text
    assert right.headers["Upload-Offset"] == str(len(data))
    assert await download_sha256(server.client, right.headers["Location"]) == (
        hashlib.sha256(data).hexdigest()
    )
