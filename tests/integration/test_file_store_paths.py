"""The file store puts an upload's file where a pre-create hook chose
(`ChangeFileInfo.Storage.Path`, relative to the upload directory), through a real HTTP hook
receiver; bad answers are refused before anything is written."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from tests.support.hook_receiver import HookReceiver
from tests.support.in_process import app_client
from tests.support.payloads import payload
from tusd_py.config import Config

TUS = {"Tus-Resumable": "1.0.0"}


def config(tmp_path: Path, receiver: HookReceiver) -> Config:
    return Config(
        upload_dir=str(tmp_path / "uploads"),
        hooks_http=receiver.url,
        hooks_enabled_events=["pre-create"],
    )


def stored_names(directory: Path) -> list[str]:
    """Every file under the upload directory but the store's index."""
    return sorted(
        str(path.relative_to(directory))
        for path in directory.rglob("*")
        if path.is_file() and ".index" not in path.parts
    )


async def create_and_send(client: httpx.AsyncClient, data: bytes) -> httpx.Response:
    created = await client.post("/files/", headers={**TUS, "Upload-Length": str(len(data))})
    if created.status_code == 201:
        patched = await client.patch(
            created.headers["Location"],
            content=data,
            headers={
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert patched.status_code == 204, patched.text
    return created


async def test_the_hook_chooses_the_path(tmp_path: Path, receiver: HookReceiver) -> None:
    receiver.answer("pre-create", body={"ChangeFileInfo": {"Storage": {"Path": "team/7/a.bin"}}})
    data = payload(3 * 1024 * 1024 + 5)
    directory = tmp_path / "uploads"
    async with app_client(config(tmp_path, receiver)) as client:
        created = await create_and_send(client, data)
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        upload_id = url.rsplit("/", 1)[1]
        chosen = directory / "team/7/a.bin"
        assert hashlib.sha256(chosen.read_bytes()).digest() == hashlib.sha256(data).digest()
        assert (await client.get(url)).content == data

        again = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
        assert again.status_code == 409, again.text
        assert "already exists" in again.text
        assert stored_names(directory) == sorted(["team/7/a.bin", upload_id, f"{upload_id}.info"])

        assert (await client.delete(url, headers=TUS)).status_code == 204
        assert stored_names(directory) == []


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("../outside.bin", "'..' path segment"),
        ("/etc/passwd", "starts or ends with '/'"),
        ("a/./b", "'.' or '..'"),
        ("a\nb.bin", "control character"),
        ("x.info", "store's own files"),
        (".index/unfinished/x", "store's own files"),
        ("abc123", "another upload"),
        ("d/" + "n" * 300, "longer than 255"),
        ("escape/x.bin", "out of the upload directory"),
    ],
)
async def test_a_bad_path_is_refused_before_anything_is_written(
    tmp_path: Path, receiver: HookReceiver, path: str, says: str
) -> None:
    directory = tmp_path / "uploads"
    directory.mkdir()
    os.symlink(tmp_path, directory / "escape")  # a link out of the directory
    receiver.answer("pre-create", body={"ChangeFileInfo": {"Storage": {"Path": path}}})
    async with app_client(config(tmp_path, receiver)) as client:
        refused = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
    assert refused.status_code == 500, refused.text
    assert says in refused.text
    assert stored_names(directory) == []
    assert sorted(os.listdir(tmp_path)) == ["uploads"]
