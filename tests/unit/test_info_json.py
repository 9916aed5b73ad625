"""An upload's info is stored with its metadata once: the header, from which the decoded form is
derived on load (issue 14, finding 6). JSON of earlier versions, with both, still loads."""

from __future__ import annotations

import json
import random

import pytest

from tests.support.payloads import heavy_metadata
from tusd_py.hooks.types import FileInfoChanges, HookError, HookResponse
from tusd_py.info import UploadInfo
from tusd_py.metadata import encode_metadata, parse_metadata


def test_the_json_holds_the_header_and_not_the_decoded_metadata() -> None:
    header = heavy_metadata(random.Random(6))
    info = UploadInfo(id="a", length=10, metadata=parse_metadata(header), metadata_header=header)
    stored = json.loads(info.to_json())
    assert "metadata" not in stored and stored["metadata_header"] == header
    assert len(info.to_json()) < len(header) + 400, "about the header's size, not 4x"
    loaded = UploadInfo.from_json(info.to_json())
    assert loaded == info
    assert loaded.metadata["filename"] == "a-file-name.bin"


def test_the_header_alone_gives_the_decoded_form() -> None:
    info = UploadInfo(id="a", length=1, metadata_header="name w7xiZXI=,empty")
    assert info.metadata == {"name": "über", "empty": ""}


def test_metadata_alone_gives_the_header() -> None:
    info = UploadInfo(id="a", length=1, metadata={"name": "über", "empty": ""})
    assert info.metadata_header == "name w7xiZXI=,empty"
    assert UploadInfo.from_json(info.to_json()) == info


def test_an_upload_without_metadata_stays_without_a_header() -> None:
    info = UploadInfo.from_json(UploadInfo(id="a", length=1).to_json())
    assert (info.metadata_header, info.metadata) == (None, {})


def test_json_of_earlier_versions_with_both_forms_loads_as_it_was() -> None:
    old: dict[str, object] = {
        "completed": False,
        "concat": None,
        "created_at": 1_700_000_000.0,
        "expires_at": 1_700_086_400.0,
        "id": "0123abcd",
        "length": 100,
        # A value an earlier hook could set: stored decoded form is kept, never re-parsed.
        "metadata": {"filename": "a b.txt", "odd\x0bkey": "x"},
        "metadata_header": "filename YSBiLnR4dA==,odd\x0bkey eA==",
        "offset": 40,
        "part_of": None,
        "parts": [],
        "storage": {"Type": "filestore", "Path": "/srv/0123abcd"},
    }
    info = UploadInfo.from_json(json.dumps(old))
    assert info.metadata == old["metadata"]
    assert info.metadata_header == old["metadata_header"]
    assert (info.offset, info.length, info.expires_at) == (40, 100, 1_700_086_400.0)
    assert "metadata" not in json.loads(info.to_json())


@pytest.mark.parametrize(
    "metadata",
    [{"a\x0bb": "v"}, {"a\u3000b": "v"}, {"ключ": "v"}, {"": "v"}, {"k": "\ud800"}, {"k": 1}],
)
def test_hooks_cannot_set_metadata_the_header_cannot_carry(metadata: dict[str, object]) -> None:
    response = HookResponse(change_file_info=FileInfoChanges(metadata=metadata))  # type: ignore[arg-type]
    with pytest.raises(HookError, match=r"ChangeFileInfo\.MetaData"):
        response.validate()


@pytest.mark.parametrize("metadata", [{"naïve": "Ünï\u2028cødé"}, {"k": ""}, {"k": "\x00\n"}])
def test_metadata_hooks_may_set_round_trips_through_the_header(metadata: dict[str, str]) -> None:
    HookResponse(change_file_info=FileInfoChanges(metadata=metadata)).validate()
    assert parse_metadata(encode_metadata(metadata)) == metadata
    info = UploadInfo(id="a", length=1, metadata=metadata)
    assert info.metadata_header == encode_metadata(metadata)
    assert UploadInfo.from_json(info.to_json()).metadata == metadata
