"""File hooks (--hooks-dir): real shell and Python scripts run by a real server process, as tusd
runs them, and the ways a script can fail, in-process."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.ops.conftest import AppFactory
from tests.ops.helpers import TUS, create, metadata, patch
from tests.support.tus_requests import wait_until
from tests.support.tusd_process import TusdProcess

# Refuses uploads without a filename (a hook response on stdout), fails on "crash" (exit 1).
PRE_CREATE = """#!/bin/sh
payload=$(cat)
case "$payload" in
  *'"filename":"crash"'*)
    echo "cannot reach the quota service" >&2
    exit 1 ;;
  *'"filename":'*)
    echo "pre-create ok for $TUS_SIZE bytes" >&2
    exit 0 ;;
esac
echo '{"RejectUpload": true, "HTTPResponse": {"StatusCode": 422, "Body": "a filename is required"}}'
"""

# Writes what it was given (stdin, environment, arguments, working directory) next to itself.
POST_FINISH = f"""#!{sys.executable}
import json, os, sys
payload = json.load(sys.stdin)
record = {{
    "payload": payload,
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "env": {{k: v for k, v in os.environ.items() if k.startswith("TUS_")}},
}}
with open(os.path.join("finished", payload["Event"]["Upload"]["ID"] + ".json"), "w") as out:
    json.dump(record, out)
"""

# Only the client that presents the upload's owner may read or write it.
PRE_ACCESS = f"""#!{sys.executable}
import json, sys
event = json.load(sys.stdin)["Event"]
owner = event["Upload"]["MetaData"].get("owner")
presented = event["HTTPRequest"]["Header"].get("X-User", [None])[0]
if owner != presented:
    print(json.dumps({{
        "RejectAccess": True,
        "HTTPResponse": {{"StatusCode": 403, "Body": event["Access"]["Mode"] + " refused"}},
    }}))
"""


def write_hook(directory: Path, name: str, text: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "hooks"
    directory.mkdir()
    (directory / "finished").mkdir()
    return directory


def test_scripts_run_by_a_real_server_as_tusd_runs_them(tmp_path: Path, hooks_dir: Path) -> None:
    write_hook(hooks_dir, "pre-create", PRE_CREATE)
    write_hook(hooks_dir, "post-finish", POST_FINISH)
    write_hook(hooks_dir, "post-create", "#!/bin/sh\nexit 0\n", mode=0o644)  # not executable
    server = TusdProcess(tmp_path / "uploads", ("--hooks-dir", str(hooks_dir)))
    try:
        named = {**TUS, "Upload-Metadata": metadata(filename="a.txt")}
        refused = httpx.post(server.endpoint, headers={**TUS, "Upload-Length": "3"})
        failed = httpx.post(
            server.endpoint,
            headers={**TUS, "Upload-Length": "3", "Upload-Metadata": metadata(filename="crash")},
        )
        created = httpx.post(server.endpoint, headers={**named, "Upload-Length": "3"})
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        upload_id = url.rsplit("/", 1)[-1]
        patched = httpx.patch(
            url,
            headers={
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            content=b"abc",
        )
        assert patched.status_code == 204, patched.text
        record_path = hooks_dir / "finished" / f"{upload_id}.json"
        assert wait_until(record_path.exists, timeout=10), server.output
    finally:
        server.stop()

    assert refused.status_code == 422 and refused.text == "a filename is required"
    assert failed.status_code == 500
    assert "exited with status 1" in failed.text
    assert "cannot reach the quota service" in failed.text
    # .index/ is the file store's index of uploads, not an upload
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir() if p.name != ".index") == [
        upload_id,
        f"{upload_id}.info",
    ]

    record = json.loads(record_path.read_text())
    assert record["argv"] == []  # tusd passes no arguments: the event is the file's name
    assert Path(record["cwd"]) == hooks_dir.resolve()
    assert record["env"] == {"TUS_ID": upload_id, "TUS_SIZE": "3", "TUS_OFFSET": "3"}
    payload = record["payload"]
    assert payload["Type"] == "post-finish"
    upload = payload["Event"]["Upload"]
    assert upload["ID"] == upload_id and upload["Offset"] == 3
    assert upload["MetaData"] == {"filename": "a.txt"}
    assert upload["Storage"]["Type"] == "filestore"
    assert payload["Event"]["HTTPRequest"]["Method"] == "PATCH"

    # stderr is logged, prefixed with the event; the non-executable file is named once.
    assert "pre-create hook: pre-create ok for 3 bytes" in server.output
    assert "pre-create hook: cannot reach the quota service" in server.output
    assert "post-create is not an executable file" in server.output


def test_a_pre_access_script_keeps_uploads_to_their_owner(tmp_path: Path, hooks_dir: Path) -> None:
    write_hook(hooks_dir, "pre-access", PRE_ACCESS)
    server = TusdProcess(
        tmp_path / "uploads",
        ("--hooks-dir", str(hooks_dir), "--hooks-enabled-events", "pre-create,pre-access"),
    )
    ana = {**TUS, "X-User": "ana"}
    bob = {**TUS, "X-User": "bob"}
    body = {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    try:
        created = httpx.post(
            server.endpoint,
            headers={**ana, "Upload-Length": "4", "Upload-Metadata": metadata(owner="ana")},
        )
        url = created.headers["Location"]
        statuses = [
            httpx.head(url, headers=bob).status_code,
            httpx.patch(url, headers={**bob, **body}, content=b"evil").status_code,
            httpx.delete(url, headers=bob).status_code,
        ]
        refused = httpx.patch(url, headers={**bob, **body}, content=b"evil")
        offset_for_ana = httpx.head(url, headers=ana).headers["Upload-Offset"]
        written = httpx.patch(url, headers={**ana, **body}, content=b"mine")
        download_by_bob = httpx.get(url, headers=bob)
        download_by_ana = httpx.get(url, headers=ana)
    finally:
        server.stop()
    assert statuses == [403, 403, 403]
    assert refused.text == "write refused"
    assert offset_for_ana == "0"
    assert written.status_code == 204
    assert download_by_bob.status_code == 403 and download_by_bob.text == "read refused"
    assert download_by_ana.status_code == 200 and download_by_ana.content == b"mine"


async def test_a_script_past_the_timeout_is_killed(
    tus_app: AppFactory, hooks_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "still-running"
    # The sleep is a child of the shell: the whole process group must go.
    write_hook(hooks_dir, "pre-create", f"#!/bin/sh\nsleep 2\ntouch {shlex.quote(str(marker))}\n")
    async with tus_app(hooks_dir=str(hooks_dir), hooks_http_timeout=0.3) as client:
        started = time.monotonic()
        response = await create(client, 2)
        elapsed = time.monotonic() - started
    assert response.status_code == 500
    assert "did not exit within 0.3s" in response.text
    assert elapsed < 1.5
    await asyncio.sleep(2.2)
    assert not marker.exists()
    uploads = tmp_path / "uploads"
    assert not uploads.exists() or not [p for p in uploads.iterdir() if p.name != ".index"]


@pytest.mark.parametrize(
    ("script", "says"),
    [
        ("#!/bin/sh\necho 'not json'\n", "the hook's output is not JSON"),
        ("#!/bin/sh\necho '[1]'\n", "must be a JSON object"),
        ("#!/bin/sh\necho '{\"RejectUpload\": 1}'\n", "RejectUpload must be true or false"),
        (
            "#!/bin/sh\nyes | head -c 70000\n",
            "output is larger than 65536 bytes",
        ),
        ("#!/bin/sh\nexit 3\n", "exited with status 3: no output on stderr"),
    ],
)
async def test_unusable_scripts_fail_the_hook(
    tus_app: AppFactory, hooks_dir: Path, tmp_path: Path, script: str, says: str
) -> None:
    write_hook(hooks_dir, "pre-create", script)
    async with tus_app(hooks_dir=str(hooks_dir)) as client:
        response = await create(client, 2)
    assert response.status_code == 500, response.text
    assert says in response.text
    assert "pre-create hook failed" in response.text


async def test_a_script_that_ignores_stdin_and_says_nothing_changes_nothing(
    tus_app: AppFactory, hooks_dir: Path
) -> None:
    write_hook(hooks_dir, "pre-create", "#!/bin/sh\nexit 0\n")
    write_hook(hooks_dir, "pre-access", "#!/bin/sh\nexit 0\n")
    async with tus_app(
        hooks_dir=str(hooks_dir), hooks_enabled_events=["pre-create", "pre-access"]
    ) as client:
        created = await create(client, 2)
        assert created.status_code == 201
        url = created.headers["Location"]
        assert (await patch(client, url, 0, b"ok")).status_code == 204
        assert (await client.get(url)).content == b"ok"


async def test_only_enabled_events_with_an_executable_run(
    tus_app: AppFactory, hooks_dir: Path, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    ran.mkdir()
    for event in ("pre-create", "pre-finish", "post-finish"):
        write_hook(hooks_dir, event, f"#!/bin/sh\ntouch {shlex.quote(str(ran / event))}\n")
    async with tus_app(hooks_dir=str(hooks_dir)) as client:
        url = (await create(client, 1)).headers["Location"]
        assert (await patch(client, url, 0, b"x")).status_code == 204
        for _ in range(500):
            if (ran / "post-finish").exists():
                break
            await asyncio.sleep(0.01)
    # pre-finish is off by default, as for HTTP hooks; post-create has no executable.
    assert sorted(p.name for p in ran.iterdir()) == ["post-finish", "pre-create"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--hooks-dir", "/nonexistent/hooks"], "'/nonexistent/hooks' is not a directory"),
        (
            ["--hooks-dir", "/tmp", "--hooks-http", "http://127.0.0.1:9/"],
            "choose one of --hooks-http and --hooks-dir",
        ),
    ],
)
def test_a_wrong_hooks_dir_is_one_line_and_status_2(
    tmp_path: Path, args: list[str], says: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tusd_py", "--port", "0", "--upload-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tusd-py: error: "), done.stderr
    assert says in lines[0]
    assert "listening" not in done.stdout
