"""The CLI serves on uvloop and httptools: most of a small request's CPU is theirs."""

from __future__ import annotations

import importlib.util

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tusd_py.connections import http_protocol


def test_uvloop_and_httptools_are_installed_and_used() -> None:
    assert importlib.util.find_spec("uvloop") is not None  # cli.run() picks it when present
    assert issubclass(http_protocol(30.0, 64 * 1024), HttpToolsProtocol)
