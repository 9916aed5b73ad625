"""tus-js-client (its Node build) uploads a file to a real server: tests/e2e/js/upload.mjs.

`upload_with_js` runs upload.mjs in a subprocess; it prints one JSON line with the upload URL and
every request it sent, so a failure names the request and the status that went wrong.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support import tus_requests
from tests.support.source_files import SourceFile
from tests.support.tusd_process import TusdProcess

JS_DIR = Path(__file__).resolve().parents[1] / "e2e" / "js"
METADATA = {"filename": "söurce file.bin", "filetype": "application/octet-stream"}


def upload_with_js(endpoint: str, source: SourceFile, **options: Any) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node is not on PATH; run `bash scripts/test`, which checks for it"
    assert (JS_DIR / "node_modules" / "tus-js-client").is_dir(), (
        f"tus-js-client is not installed in {JS_DIR}; run `bash scripts/test` (npm ci)"
    )
    options = {"endpoint": endpoint, "file": str(source.path), "metadata": METADATA, **options}
    done = subprocess.run(
        [node, str(JS_DIR / "upload.mjs"), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"upload.mjs printed nothing (exit {done.returncode}); stderr:\n{done.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert done.returncode == 0 and result["ok"], (
        "tus-js-client upload failed:\n"
        + json.dumps(result, indent=1, ensure_ascii=False)
        + f"\nstderr:\n{done.stderr}"
    )
    return result


def assert_stored(server: TusdProcess, url: str, source: SourceFile) -> None:
    """The upload is complete, with the metadata `upload_with_js` sent, and reads back whole."""
    tus_requests.assert_stored(server, url, source, METADATA)


def requests_of(result: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [r for r in result["requests"] if r["method"] == method]
