"""tuspy (PyPI `tuspy`, import `tusclient`) uploads to the real server; the download must match."""

from __future__ import annotations

import pytest
from tusclient.client import TusClient

from tests.support import tus_requests
from tests.support.source_files import MakeFile, SourceFile
from tests.support.tus_requests import head
from tests.support.tusd_process import TusdProcess

MiB = 1024 * 1024
METADATA = {"filename": "report 2024.pdf", "filetype": "application/pdf", "empty": ""}

pytestmark = pytest.mark.e2e


def assert_stored(server: TusdProcess, url: str, source: SourceFile) -> None:
    tus_requests.assert_stored(server, url, source, METADATA)


def test_chunked_upload_with_metadata(tusd: TusdProcess, make_file: MakeFile) -> None:
    source = make_file(3 * MiB + 4321)
    with source.path.open("rb") as stream:
        uploader = TusClient(tusd.endpoint).uploader(
            file_stream=stream, chunk_size=MiB, metadata=METADATA
        )
        uploader.upload()
    assert uploader.offset == source.size
    assert uploader.url is not None
    assert_stored(tusd, uploader.url, source)


def test_stopped_upload_resumed_by_a_new_uploader(tusd: TusdProcess, make_file: MakeFile) -> None:
    source = make_file(3 * MiB + 4321)
    with source.path.open("rb") as stream:
        first = TusClient(tusd.endpoint).uploader(
            file_stream=stream, chunk_size=MiB, metadata=METADATA
        )
        first.upload(stop_at=2 * MiB)
    assert first.url is not None
    assert head(first.url).headers["Upload-Offset"] == str(2 * MiB)

    with source.path.open("rb") as stream:
        second = TusClient(tusd.endpoint).uploader(
            file_stream=stream, url=first.url, chunk_size=MiB
        )
        assert second.offset == 2 * MiB  # read with HEAD
        second.upload()
    assert_stored(tusd, first.url, source)


async def test_async_uploader(tusd: TusdProcess, make_file: MakeFile) -> None:
    source = make_file(2 * MiB + 99)
    with source.path.open("rb") as stream:
        uploader = TusClient(tusd.endpoint).async_uploader(
            file_stream=stream, chunk_size=MiB, metadata=METADATA
        )
        await uploader.upload()
    assert uploader.url is not None
    assert_stored(tusd, uploader.url, source)
