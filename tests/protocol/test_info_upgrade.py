"""An upload in flight across the upgrade to the compact info JSON (issue 14, finding 6): its
`.info` (and Redis state) in the earlier form, with the decoded metadata beside the header, is
served, resumed and finished by this version, which then writes the compact form."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from redis import Redis

from tests.protocol.conftest import TusFactory
from tests.protocol.helpers import create, head, patch
from tusd_py.metadata import parse_metadata
from tusd_py.redis_client import upload_key

HEADER = ",".join(
    f"{k} {base64.b64encode(v.encode()).decode()}"
    for k, v in {"filename": "old.txt", "filetype": "text/plain"}.items()
)


def as_before(text: str) -> str:
    data = json.loads(text)
    data["metadata"] = parse_metadata(data["metadata_header"])
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


@pytest.mark.parametrize("backend", ["file-local", "file-redis"])
async def test_an_upload_stored_by_the_earlier_version_is_resumed_and_finished(
    tus_factory: TusFactory, tmp_path: Path
) -> None:
    upload_dir = tmp_path / "shared"
    before = await tus_factory(upload_dir=str(upload_dir))
    url = await create(before.client, 6, metadata=HEADER)
    assert (await patch(before.client, url, 0, b"abc")).status_code == 204
    upload_id = url.rsplit("/", 1)[1]
    info_file = upload_dir / f"{upload_id}.info"
    info_file.write_text(as_before(info_file.read_text()))
    redis_url, prefix = before.config.redis_url, before.config.redis_prefix
    if redis_url:
        with Redis.from_url(redis_url, decode_responses=True) as redis:
            key = upload_key(prefix, upload_id, "state")
            redis.hset(key, "info", as_before(redis.hget(key, "info") or ""))

    after = await tus_factory(upload_dir=str(upload_dir), redis_prefix=prefix)
    state = await head(after.client, url)
    assert (state.status_code, state.headers["Upload-Offset"]) == (200, "3")
    assert state.headers["Upload-Metadata"] == HEADER
    assert (await patch(after.client, url, 3, b"def")).status_code == 204
    download = await after.client.get(url)
    assert download.content == b"abcdef"
    assert download.headers["Content-Type"].startswith("text/plain")
    assert "old.txt" in download.headers["Content-Disposition"]
    assert "metadata" not in json.loads(info_file.read_text()), "finishing wrote the new form"
