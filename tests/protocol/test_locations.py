"""Location: absolute, under the configured base path, inside a parent app, behind a proxy."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest

from tests.protocol.conftest import TusFactory
from tests.protocol.helpers import TUS, head, patch

UPLOAD_ID = r"[A-Za-z0-9][A-Za-z0-9_-]*"


async def location(client: httpx.AsyncClient, endpoint: str = "/files/", **headers: str) -> str:
    response = await client.post(endpoint, headers={**TUS, "Upload-Length": "3", **headers})
    assert response.status_code == 201, response.text
    return str(response.headers["Location"])


async def assert_usable(client: httpx.AsyncClient, url: str) -> None:
    """The Location really names the upload: HEAD, PATCH and GET work on it."""
    assert (await head(client, url)).headers["Upload-Offset"] == "0"
    assert (await patch(client, url, 0, b"abc")).status_code == 204
    assert (await client.get(url)).content == b"abc"


async def test_location_is_absolute_under_the_endpoint(client: httpx.AsyncClient) -> None:
    url = await location(client)
    assert re.fullmatch(rf"http://testserver/files/{UPLOAD_ID}", url), url
    await assert_usable(client, url)


async def test_location_follows_the_host_the_client_used(tus_factory: TusFactory) -> None:
    server = await tus_factory(base_url="https://uploads.example:8443")
    url = await location(server.client)
    assert url.startswith("https://uploads.example:8443/files/")
    await assert_usable(server.client, url)


@pytest.mark.parametrize("base_path", ["/api/v1/uploads/", "/api/v1/uploads", "api/v1/uploads"])
async def test_location_honours_the_base_path(tus_factory: TusFactory, base_path: str) -> None:
    server = await tus_factory(base_path=base_path)
    url = await location(server.client, "/api/v1/uploads/")
    assert re.fullmatch(rf"http://testserver/api/v1/uploads/{UPLOAD_ID}", url), url
    await assert_usable(server.client, url)
    assert (
        await server.client.post("/files/", headers={**TUS, "Upload-Length": "1"})
    ).status_code == 404


async def test_location_inside_a_parent_app(tus_factory: TusFactory) -> None:
    server = await tus_factory(mount="/outer")
    url = await location(server.client, "/outer/files/")
    assert re.fullmatch(rf"http://testserver/outer/files/{UPLOAD_ID}", url), url
    await assert_usable(server.client, url)


async def test_location_inside_a_parent_app_at_the_root_base_path(
    tus_factory: TusFactory,
) -> None:
    server = await tus_factory(mount="/uploads", base_path="/")
    url = await location(server.client, "/uploads/")
    assert re.fullmatch(rf"http://testserver/uploads/{UPLOAD_ID}", url), url
    await assert_usable(server.client, url)


PROXY_HEADERS = {
    "X-Forwarded-Host": "public.example",
    "X-Forwarded-Proto": "https",
    "Forwarded": 'for=192.0.2.1;proto=https;host="other.example"',
}


@pytest.mark.parametrize("name", list(PROXY_HEADERS))
async def test_proxy_headers_are_ignored_unless_trusted(
    client: httpx.AsyncClient, name: str
) -> None:
    url = await location(client, **{name: PROXY_HEADERS[name]})
    assert url.startswith("http://testserver/files/"), url


@pytest.mark.parametrize(
    ("headers", "prefix"),
    [
        ({"X-Forwarded-Host": "public.example"}, "http://public.example/files/"),
        ({"X-Forwarded-Proto": "https"}, "https://testserver/files/"),
        (
            {"X-Forwarded-Host": "public.example:8443", "X-Forwarded-Proto": "https"},
            "https://public.example:8443/files/",
        ),
        ({"X-Forwarded-Host": "a.example, b.example"}, "http://a.example/files/"),
        ({"X-Forwarded-Proto": "HTTPS, http"}, "https://testserver/files/"),
        (
            {"Forwarded": 'for=192.0.2.1;proto=https;host="public.example"'},
            "https://public.example/files/",
        ),
        ({"Forwarded": "host=a.example, host=b.example"}, "http://a.example/files/"),
        (
            {"Forwarded": "proto=https;host=f.example", "X-Forwarded-Host": "x.example"},
            "https://f.example/files/",
        ),
        ({"X-Forwarded-Host": "[2001:db8::1]:8080"}, "http://[2001:db8::1]:8080/files/"),
    ],
)
async def test_trusted_proxy_headers_shape_the_location(
    tus_factory: TusFactory, headers: dict[str, str], prefix: str
) -> None:
    server = await tus_factory(behind_proxy=True)
    url = await location(server.client, **headers)
    assert url.startswith(prefix), url


async def test_trusted_proxy_headers_inside_a_parent_app(tus_factory: TusFactory) -> None:
    server = await tus_factory(behind_proxy=True, mount="/outer")
    url = await location(server.client, "/outer/files/", **{"X-Forwarded-Host": "public.example"})
    assert url.startswith("http://public.example/outer/files/"), url


@pytest.mark.parametrize(
    "value",
    [
        "evil.example/phish",
        "evil.example/../x",
        "user@evil.example",
        "evil.example\\@good.example",
        "evil.example?x=1",
        "evil.example#frag",
        '"><script>alert(1)</script>',
        "evil.example:8080:9090",
        "evil.example:notaport",
        "evil example",
        "",
        "%65vil.example",
        "javascript:alert(1)",
    ],
)
async def test_malicious_forwarded_hosts_are_ignored(tus_factory: TusFactory, value: str) -> None:
    server = await tus_factory(behind_proxy=True)
    for headers in (
        {"X-Forwarded-Host": value},
        {"Forwarded": f'host="{value}"'},
        {"Forwarded": f"host={value}"},
    ):
        url = await location(server.client, **headers)
        assert url.startswith("http://testserver/files/"), (headers, url)


@pytest.mark.parametrize("value", ["javascript", "file", "ftp", "https://x", ""])
async def test_unknown_forwarded_protocols_are_ignored(tus_factory: TusFactory, value: str) -> None:
    server = await tus_factory(behind_proxy=True)
    url = await location(server.client, **{"X-Forwarded-Proto": value})
    assert url.startswith("http://testserver/files/"), url


@pytest.mark.parametrize("host", ["evil.example/phish", "a@b", "bad host", '"><x'])
async def test_a_malformed_host_header_never_ends_up_in_the_location(
    client: httpx.AsyncClient, host: str
) -> None:
    url = await location(client, Host=host)
    parts = urlsplit(url)
    assert parts.scheme == "http"
    assert parts.hostname is not None
    assert parts.port is None or parts.port > 0
    assert "evil" not in url and "@" not in url and " " not in url and '"' not in url
    assert re.fullmatch(rf"/files/{UPLOAD_ID}", parts.path), url


@pytest.mark.parametrize("mount", [None, "/outer"])
async def test_the_bare_endpoint_path_is_served_without_a_redirect(
    tus_factory: TusFactory, mount: str | None
) -> None:
    """tus-js-client under Node does not follow redirects: `/files` must work like `/files/`."""
    server = await tus_factory(mount=mount) if mount else await tus_factory()
    prefix = mount or ""
    url = await location(server.client, f"{prefix}/files")
    assert re.fullmatch(rf"http://testserver{prefix}/files/{UPLOAD_ID}", url), url
    await assert_usable(server.client, url)
    options = await server.client.options(f"{prefix}/files")
    assert options.status_code == 204
    assert "creation" in options.headers["Tus-Extension"]
