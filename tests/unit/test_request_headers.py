"""`LookupHeaders` answers lookups as Starlette's `Headers` does, from its dict."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from tusd_py.protocol.request import LookupHeaders, TusRequest

RAW = [
    (b"tus-resumable", b"1.0.0"),
    (b"upload-offset", b"5"),
    (b"x-repeated", b"first"),
    (b"x-repeated", b"second"),
    (b"x-latin", "caf\u00e9".encode("latin-1")),
]


def scope() -> dict[str, object]:
    return {"type": "http", "method": "HEAD", "path": "/files/x", "headers": list(RAW)}


@pytest.mark.parametrize(
    "name", ["tus-resumable", "Upload-Offset", "X-REPEATED", "x-latin", "missing", ""]
)
def test_lookups_match_starlettes_headers(name: str) -> None:
    ours, theirs = LookupHeaders(scope()), Headers(scope=scope())
    assert ours.get(name) == theirs.get(name)
    assert ours.get(name, "default") == theirs.get(name, "default")
    assert (name in ours) == (name in theirs)
    if name in theirs:
        assert ours[name] == theirs[name]
    else:
        with pytest.raises(KeyError):
            ours[name]


def test_the_rest_is_starlettes_view_of_the_raw_list() -> None:
    ours = LookupHeaders(scope())
    assert ours.getlist("x-repeated") == ["first", "second"]
    assert ours.raw == RAW
    assert list(ours.items()) == list(Headers(raw=list(RAW)).items())
    assert 5 not in ours  # type: ignore[comparison-overlap]  # not a name: no match, no error


def test_a_tus_request_builds_its_headers_once() -> None:
    request = TusRequest(scope())
    assert isinstance(request.headers, LookupHeaders)
    assert request.headers is request.headers
    assert request.headers["upload-offset"] == "5"
