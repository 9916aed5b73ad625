"""Hostile and broken requests: never a 5xx, always a plain-text reason, never a stray file."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.protocol.conftest import TusServer
from tests.protocol.helpers import (
    OCTET,
    TUS,
    assert_plain_error,
    b64,
    create,
    head,
    patch,
    upload,
)

# --- upload ids that must never reach a store ---------------------------------------------------

BAD_IDS = [
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%5c..%5cwindows%5cwin.ini",
    "..%2F",
    "%2e%2e",
    "...",
    ".hidden",
    "abc%00def",
    "abc%00",
    "%00",
    "a" * 129,
    "a" * 5000,
    "abc%2fdef",
    "abc%20def",
    "abc%0d%0aX-Injected:%201",
    "%C3%A9t%C3%A9",
    "-leading-dash",
    "_leading_underscore",
    "abc.info",
    "abc.part",
    "abc;x=1",
    "~root",
]


class Spy:
    """Records every call to the store, the state and the locker of a running app."""

    def __init__(self, server: TusServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        ctx = server.ctx
        for label, target in (("store", ctx.store), ("state", ctx.state), ("lock", ctx.locker)):
            for name in dir(target):
                if name.startswith("_") or name in ("open", "close"):
                    continue
                attr = getattr(target, name)
                if callable(attr):
                    monkeypatch.setattr(target, name, self._wrap(f"{label}.{name}", attr))

    def _wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(label)
            return function(*args, **kwargs)

        return spy


def tree(root: Path) -> set[str]:
    return {str(Path(d, f).relative_to(root)) for d, _, files in os.walk(root) for f in files}


@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE", "GET", "POST"])
async def test_malicious_ids_are_404_and_never_reach_storage(
    server: TusServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, method: str
) -> None:
    client = server.client
    real = await upload(client, b"abc")
    real_id = real.rsplit("/", 1)[1]
    before = tree(tmp_path)
    spy = Spy(server, monkeypatch)
    headers = {**TUS, "Content-Type": OCTET, "Upload-Offset": "0"}
    if method == "POST":
        headers["X-HTTP-Method-Override"] = "PATCH"
    for bad in [*BAD_IDS, f"{real_id}.info", f"{real_id}%2f..%2f{real_id}", f"{real_id}/"]:
        url = httpx.URL(f"http://testserver/files/{bad}")
        response = await client.request(method, url, headers=headers, content=b"xyz")
        assert response.status_code == 404, (bad[:40], response.status_code, response.text)
        assert "Upload-Offset" not in response.headers
        if method != "HEAD":
            assert response.headers["Content-Type"].startswith("text/plain")
            assert response.text.strip()
            assert '"id"' not in response.text  # not the .info JSON
    assert spy.calls == []
    assert tree(tmp_path) == before


async def test_the_info_file_is_never_served(client: httpx.AsyncClient) -> None:
    url = await upload(client, b"abc", metadata=f"secret {b64('do not leak')}")
    for suffix in (".info", ".info/", "%2Einfo", ".part", ".progress"):
        response = await client.get(url + suffix)
        assert response.status_code == 404, suffix
        assert b"leak" not in response.content


# --- a table of broken requests: never a 5xx --------------------------------------------------


@dataclass
class Case:
    method: str
    path: str  # "{url}" is a fresh upload of 10 bytes, 3 received; "{done}" a finished one
    headers: list[tuple[str, bytes | str]] = field(default_factory=list)
    body: bytes = b""

    def __str__(self) -> str:
        shown = ",".join(f"{k}={v!r}"[:40] for k, v in self.headers)
        return f"{self.method} {self.path[:30]} {shown}"


def tus(*pairs: tuple[str, bytes | str]) -> list[tuple[str, bytes | str]]:
    return [("Tus-Resumable", "1.0.0"), *pairs]


def patching(offset: bytes | str, *pairs: tuple[str, bytes | str]) -> list[tuple[str, bytes | str]]:
    return tus(("Content-Type", OCTET), ("Upload-Offset", offset), *pairs)


BIG = "9" * 5000
CASES = [
    # creation
    Case("POST", "/files/", tus(("Upload-Length", "abc"))),
    Case("POST", "/files/", tus(("Upload-Length", BIG))),
    Case("POST", "/files/", tus(("Upload-Length", "-0"))),
    Case("POST", "/files/", tus(("Upload-Length", b"\xff\xfe"))),
    Case("POST", "/files/", tus(("Upload-Length", "1"), ("Upload-Length", "2"))),
    Case("POST", "/files/", tus(("Upload-Defer-Length", BIG))),
    Case("POST", "/files/", tus(("Upload-Length", "3"), ("Upload-Metadata", b"k \xff\xfe"))),
    Case("POST", "/files/", tus(("Upload-Length", "3"), ("Upload-Metadata", "k " + "=" * 8))),
    Case("POST", "/files/", tus(("Upload-Length", "3"), ("Upload-Metadata", "k /w=="))),
    Case("POST", "/files/", tus(("Upload-Length", "3"), ("Upload-Metadata", "a" * 100_000))),
    Case("POST", "/files/", tus(("Upload-Length", "3"), ("Upload-Metadata", ",,,, ,"))),
    Case("POST", "/files/", tus(("Upload-Length", "3"), ("Upload-Metadata", "\t\x00 \x01"))),
    Case(
        "POST",
        "/files/",
        tus(("Upload-Length", "3"), ("Content-Type", OCTET), ("Content-Length", "abc")),
        b"abc",
    ),
    Case(
        "POST",
        "/files/",
        tus(("Upload-Length", "3"), ("Content-Type", OCTET), ("Content-Length", BIG)),
        b"abc",
    ),
    Case(
        "POST",
        "/files/",
        tus(("Upload-Length", "3"), ("Content-Type", OCTET), ("Content-Length", "-1")),
        b"abc",
    ),
    Case("POST", "/files/", tus(("Upload-Length", "3"), ("Content-Type", OCTET)), b"abcdef"),
    Case("POST", "/files/", tus(("Upload-Length", "3"), ("Content-Type", b"\xff/\xfe")), b"ab"),
    Case("POST", "/files/", tus(("Upload-Concat", "final;"))),
    Case("POST", "/files/", tus(("Upload-Concat", "final;/files/../x /files/%00"))),
    Case("POST", "/files/", tus(("Upload-Concat", "final;http://[::1"))),
    Case("POST", "/files/", tus(("Upload-Concat", "final;{url} {url}"))),
    Case("POST", "/files/", tus(("Upload-Concat", "final;" + "/files/x " * 2000))),
    Case("POST", "/files/", tus(("Upload-Concat", "partial;x"), ("Upload-Length", "1"))),
    Case("POST", "/files/", tus(("Upload-Concat", "nonsense"), ("Upload-Length", "1"))),
    Case("POST", "/files/", tus(("Upload-Concat", "partial"), ("Upload-Defer-Length", "1"))),
    Case("POST", "/files/", [("Upload-Draft-Interop-Version", "abc")]),
    Case("POST", "/files/", [("Upload-Draft-Interop-Version", BIG)]),
    Case("POST", "/files/", [("Upload-Draft-Interop-Version", b"\xb2")]),  # superscript two
    Case("POST", "/files/", [("Upload-Draft-Interop-Version", "6"), ("Upload-Complete", "?2")]),
    Case(
        "POST",
        "/files/",
        [("Upload-Draft-Interop-Version", "6"), ("Upload-Complete", "?1"), ("Upload-Length", "-5")],
        b"abc",
    ),
    Case("POST", "/files/", [("Upload-Draft-Interop-Version", "3"), ("Upload-Incomplete", "x")]),
    Case("POST", "/files/", [("Upload-Complete", "?0")]),
    # appending
    Case("PATCH", "{url}", patching("99999999999999999999999"), b"x"),
    Case("PATCH", "{url}", patching(BIG), b"x"),
    Case("PATCH", "{url}", patching(b"\xff"), b"x"),
    Case("PATCH", "{url}", patching("3", ("Upload-Length", "1e9")), b"x"),
    Case("PATCH", "{url}", patching("3", ("Upload-Length", BIG)), b"x"),
    Case("PATCH", "{url}", patching("3", ("Upload-Offset", "4")), b"x"),
    Case("PATCH", "{url}", patching("3", ("Content-Length", "zz")), b"x"),
    Case("PATCH", "{url}", patching("3", ("Content-Length", "1000")), b"x"),
    Case("PATCH", "{url}", patching("3", ("Upload-Checksum", "sha1"))),
    Case("PATCH", "{url}", patching("3", ("Upload-Checksum", "sha1 !!!")), b"x"),
    Case("PATCH", "{url}", patching("3", ("Upload-Checksum", "nope abc")), b"x"),
    Case("PATCH", "{url}", patching("3", ("Upload-Checksum", "sha1 " + "A" * 10_000)), b"x"),
    Case("PATCH", "{url}", patching("3", ("Upload-Checksum", b"sha1 \xff\xfe")), b"x"),
    Case("PATCH", "{url}", patching("3", ("Upload-Checksum", "md5 " + b64("x"))), b"x"),
    Case("PATCH", "{url}", patching("3", ("Upload-Concat", "partial")), b"x"),
    Case("PATCH", "{url}", [("Upload-Draft-Interop-Version", "6"), ("Upload-Offset", "x")], b"x"),
    Case(
        "PATCH",
        "{url}",
        [
            ("Upload-Draft-Interop-Version", "6"),
            ("Upload-Offset", "3"),
            ("Content-Type", "application/partial-upload"),
            ("Upload-Complete", "maybe"),
        ],
        b"x",
    ),
    Case("PATCH", "{done}", patching("3"), b"more"),
    Case("PATCH", "{done}", patching("3", ("Upload-Length", "4")), b""),
    Case("PATCH", "/files/", patching("0"), b"x"),
    # reading and deleting
    Case("HEAD", "{url}", [("Tus-Resumable", b"\xff\xfe")]),
    Case("HEAD", "{url}", tus(("Upload-Draft-Interop-Version", "-1"))),
    Case("GET", "{done}", [("Range", "bytes=" + BIG + "-")]),
    Case("GET", "{done}", [("Range", "bytes=-")]),
    Case("GET", "{done}", [("Range", "bytes=-" + BIG)]),
    Case("GET", "{done}", [("Range", "bytes=0-0,-1")]),
    Case("GET", "{done}", [("Range", b"bytes=\xff-")]),
    Case("GET", "{url}", [("Range", "bytes=0-1")]),
    Case("GET", "/files/", []),
    Case("DELETE", "{url}", tus(("Upload-Concat", "final;x"))),
    Case("DELETE", "/files/", tus()),
    # methods and overrides
    Case("POST", "{url}", tus(("X-HTTP-Method-Override", b"\x00"))),
    Case("POST", "{url}", tus(("X-HTTP-Method-Override", "GET"))),
    Case("POST", "{url}", tus(("X-HTTP-Method-Override", "OPTIONS"))),
    Case("POST", "{url}", tus(("X-HTTP-Method-Override", "POST"))),
    Case("POST", "{url}", tus()),
    Case("GET", "{url}", tus(("X-HTTP-Method-Override", "PUT"))),
    Case("PUT", "/files/", tus(("Upload-Length", "1"))),
    Case("PUT", "{url}", tus()),
    Case("TRACE", "{url}", tus()),
    Case("PROPFIND", "/files/", tus()),
    Case("OPTIONS", "{url}", [("Access-Control-Request-Method", "PATCH")]),
    Case("OPTIONS", "/files/", [("Origin", "null"), ("Access-Control-Request-Method", "PUT")]),
    Case(
        "OPTIONS",
        "/files/",
        [
            ("Origin", "x"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "X-Not-Allowed"),
        ],
    ),
    # paths outside the endpoint
    Case("POST", "/files", tus(("Upload-Length", "1"))),
    Case("GET", "/", []),
    Case("HEAD", "/files/../files/x", tus()),
]


async def test_no_malformed_request_gets_a_server_error(server: TusServer) -> None:
    client = server.client
    url = await create(client, 10)
    assert (await patch(client, url, 0, b"abc")).status_code == 204
    done = await upload(client, b"done")
    failures = []
    for case in CASES:
        path = case.path.format(url=url, done=done)
        headers = [
            (k.encode(), v.format(url=url).encode() if isinstance(v, str) else v)
            for k, v in case.headers
        ]
        response = await client.request(
            case.method,
            httpx.URL(path) if path.startswith("http") else path,
            headers=headers,
            content=case.body,
        )
        if response.status_code >= 500:
            failures.append(f"{case}: {response.status_code} {response.text[:100]!r}")
        elif response.status_code >= 400 and case.method != "HEAD":
            if not response.headers.get("Content-Type", "").startswith("text/plain"):
                failures.append(f"{case}: {response.status_code} without a text/plain body")
            elif not response.text.strip():
                failures.append(f"{case}: {response.status_code} with an empty body")
    assert not failures, "\n".join(failures)
    # The upload the table hammered is intact: 3 bytes, or gone if a case legitimately deleted it.
    state = await head(client, url)
    assert state.status_code in (200, 404, 410)


async def test_wrong_tus_resumable_on_head_of_unknown_upload(client: httpx.AsyncClient) -> None:
    response = await client.head("/files/0123456789abcdef", headers={"Tus-Resumable": "0.1"})
    assert response.status_code in (404, 412)
    assert "Upload-Offset" not in response.headers


async def test_error_bodies_name_the_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/files/", headers={**TUS, "Upload-Length": "-1"})
    assert_plain_error(response, 400)
    assert "Upload-Length" in response.text
    response = await client.post("/files/", headers={"Upload-Length": "1"})
    assert_plain_error(response, 412)
    assert "Tus-Resumable" in response.text
