"""A raw-HTTP fuzzer against a live server process: Hypothesis generates methods, paths, header
names and values and bodies, sent over a bare socket exactly as generated.

Invariants, checked after every request: no 5xx, the server process is alive, and a request
answered with a 4xx changed nothing in the upload directory (neither the bytes nor the `.info`
of any upload). Figures: requests sent, statuses seen.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import string
from collections import Counter
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import Scale
from tests.reliability.figures import record
from tests.reliability.rawhttp import Answer, request
from tests.support.tusd_process import TusdProcess

TUS = {"Tus-Resumable": "1.0.0"}
HEADER_NAMES = [
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Checksum",
    "Content-Type",
    "X-HTTP-Method-Override",
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Draft-Interop-Version",
    "Range",
    "Host",
    "Forwarded",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "Origin",
    "Access-Control-Request-Method",
    "Trailer",
    "Expect",
    "Connection",
    "Authorization",
    "Cookie",
]
SHA1_EMPTY = base64.b64encode(hashlib.sha1(b"").digest()).decode()
VALUES = [
    "1.0.0", "0.2.2", "", " ", "1", "0", "-1", "+5", "0x10", "1e3", "٣", "9" * 40,
    "application/offset+octet-stream", "application/partial-upload", "text/html",
    "partial", "final;/files/{id0} /files/{id1}", "final;", "final;http://[::1",
    f"sha1 {SHA1_EMPTY}", "md5 !!!", "crc32 AAAAAA==", "bytes=0-", "bytes=-5", "bytes=5-1",
    "?1", "?0", "PATCH", "DELETE", "HEAD", "GET", "close", "keep-alive", "100-continue",
    "filename d29ybGQ=,filetype dGV4dC9odG1s", "k v,k v", "key", ",", "a b c",
    "for=1.2.3.4;host=evil.example;proto=https", "evil.example", "javascript:alert(1)",
    "/files/{id0}", "http://127.0.0.1/files/{id1}", "Upload-Checksum", "3", "6", "8", "99",
]  # fmt: skip
PATHS = [
    "/files/", "/files", "/files/{id0}", "/files/{id1}", "/files/{id2}", "/", "/health",
    "/metrics", "/ready", "*", "/files/{id0}.info", "/files/../{id0}", "/files/%2e%2e/",
    "/files/{id0}/x", "/files/" + "f" * 32, "//files/{id0}", "/files/{id0}?x=1",
]  # fmt: skip

latin1_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\r\n"),
    max_size=120,
)
token = st.text(alphabet=string.ascii_letters + string.digits + "-_!#$%&'*+.^`|~", min_size=1)
methods = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "PUT", "TRACE"]),
    token.map(lambda t: t[:12]),
)
paths = st.one_of(
    st.sampled_from(PATHS),
    st.builds(lambda s: "/files/" + s, st.text(alphabet=string.printable[:94], max_size=40)),
    st.text(alphabet=string.printable[:94], min_size=1, max_size=60),
)
values = st.one_of(
    st.sampled_from(VALUES),
    st.integers(min_value=-(10**6), max_value=10**25).map(str),
    latin1_text,
)
headers = st.lists(
    st.tuples(st.one_of(st.sampled_from(HEADER_NAMES), token.map(lambda t: t[:30])), values),
    max_size=8,
)
bodies = st.one_of(st.just(b""), st.binary(max_size=300), st.binary(min_size=1000, max_size=5000))
length_modes = st.sampled_from(["exact", "exact", "exact", "omitted", "short"])


def snapshot(directory: Path) -> dict[str, str]:
    """Every file of the store and a digest of its content."""
    return {
        name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
        for name in sorted(os.listdir(directory))
        if (directory / name).is_file()  # not the file store's .index/
    }


def test_fuzz_raw_http(tmp_path: Path, scale: Scale) -> None:
    upload_dir = tmp_path / "uploads"
    server = TusdProcess(
        upload_dir, ("--read-timeout", "1s", "--header-timeout", "2s", "--log-level", "error")
    )
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    try:
        port = int(re.findall(r":(\d+)/", server.endpoint)[0])
        ids = []
        for length, sent in ((100, 0), (100, 50), (10, 10)):
            created = httpx.post(server.endpoint, headers={**TUS, "Upload-Length": str(length)})
            url = created.headers["Location"]
            ids.append(url.rsplit("/", 1)[-1])
            if sent:
                httpx.patch(
                    url,
                    content=b"s" * sent,
                    headers={
                        **TUS,
                        "Upload-Offset": "0",
                        "Content-Type": "application/offset+octet-stream",
                    },
                ).raise_for_status()

        def fill(text: str) -> str:
            for i, upload_id in enumerate(ids):
                text = text.replace(f"{{id{i}}}", upload_id)
            return text

        @settings(
            max_examples=scale.pick(1500, 20000),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(method=methods, path=paths, fields=headers, body=bodies, length_mode=length_modes)
        def one(
            method: str, path: str, fields: list[tuple[str, str]], body: bytes, length_mode: str
        ) -> None:
            fields = [(name, fill(value)) for name, value in fields]
            fields = [(n, v) for n, v in fields if n.lower() not in ("content-length", "host")]
            if length_mode == "exact" and body:
                fields.append(("Content-Length", str(len(body))))
            elif length_mode == "short" and body:
                fields.append(("Content-Length", str(len(body) // 2)))
            before = snapshot(upload_dir)
            answer: Answer = request(port, method, fill(path), fields, body, timeout=3.0)
            after = snapshot(upload_dir)
            statuses[answer.status] += 1
            shown = f"{method} {fill(path)} {fields} body={len(body)}B ({length_mode})"
            if server.proc.poll() is not None:
                problems.append(f"the server died on {shown}")
            elif answer.status >= 500:
                problems.append(f"{answer.status} {answer.body[:200]!r} for {shown}")
            elif answer.status >= 400 and after != before:
                changed = sorted(
                    k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
                )
                problems.append(f"{answer.status} changed {changed} for {shown}")
            assert not problems, problems[-1]

        one()
    finally:
        server.stop()
        record(
            "fuzz-raw-http",
            {
                "requests": sum(statuses.values()),
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "problems": len(problems),
            },
        )
        if problems:
            print(server.output[-5000:])
    assert not problems, "\n".join(problems[:10])
