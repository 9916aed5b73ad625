"""Fixtures for end-to-end tests: real server processes, files to upload, a real browser.

`tusd` starts a server on a free port with its own upload directory and yields it; `tusd_factory`
starts more (for example a second server on the same upload directory after a restart). Every
process is stopped with SIGTERM, then SIGKILL, and its output is printed at teardown so that a
failing test shows what the server logged. `page` is a fresh tab (its own browser context) in
headless Chromium, whose console is printed at teardown.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.browser import launch_chromium, record_console
from tests.support.source_files import MakeFile, SourceFile
from tests.support.tusd_process import StartTusd, TusdProcess


@pytest.fixture
def tusd_factory(tmp_path: Path) -> Iterator[StartTusd]:
    """`start(*extra_args, upload_dir=None)`: a running server; the default dir is per test."""
    started: list[TusdProcess] = []

    def start(*extra_args: str, upload_dir: Path | None = None) -> TusdProcess:
        directory = upload_dir or tmp_path / "uploads"
        directory.mkdir(parents=True, exist_ok=True)
        server = TusdProcess(directory, extra_args)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
            print(f"--- output of {' '.join(server.args[1:])} (exit {server.proc.returncode})")
            print(server.output)


@pytest.fixture
def tusd(tusd_factory: StartTusd) -> TusdProcess:
    return tusd_factory()


@pytest.fixture(scope="session")
def make_file(tmp_path_factory: pytest.TempPathFactory) -> MakeFile:
    """`make_file(size)`: a file of reproducible pseudo-random bytes, made once per size."""
    made: dict[int, SourceFile] = {}
    directory = tmp_path_factory.mktemp("sources")

    def make(size: int) -> SourceFile:
        if size not in made:
            path = directory / f"source-{size}.bin"
            path.write_bytes(random.Random(size).randbytes(size))
            made[size] = SourceFile(path)
        return made[size]

    return make


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium through Playwright, one per test module."""
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A new tab in a browser context of its own (cookies and localStorage start empty)."""
    tab = browser.new_page()
    console = record_console(tab)
    try:
        yield tab
    finally:
        print("--- browser console\n" + "\n".join(console))
        tab.context.close()
