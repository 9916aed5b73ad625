"""Render the figures of the last run (test-artifacts/reliability/*.json) as Markdown tables,
the form docs/reliability.md quotes them in.

    python -m tests.reliability.report [directory]    (default: test-artifacts/reliability)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.reliability.figures import ARTIFACTS

MiB = 1024 * 1024


def load(directory: Path = ARTIFACTS) -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


def uploads_row(name: str, f: dict[str, Any], condition: str) -> str:
    return (
        f"| {name} | {condition} | {f['uploads_verified_sha256']}/{f['uploads_started']} | "
        f"{mib(f['bytes_total'])} | {mib(f['bytes_resent'])} | {f['bytes_resent_beyond_protocol']}"
        f" | {f['offset_regressions'] + f.get('watcher_offsets_backwards', 0)} | "
        f"{f['offsets_past_sent_bytes'] + f.get('watcher_offsets_past_stored_bytes', 0)} | "
        f"{f['duration_s']} s |"
    )


def render(figures: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| Scenario | Conditions | Right SHA-256 / started | Bytes | Re-sent | Re-sent beyond "
        "protocol | Offsets backwards | Offsets past stored | Time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, f in figures.items():
        if name.startswith("crash-loop"):
            per_kill = f["bytes_resent"] // max(1, f["kills"])
            condition = (
                f"{f['store']}, 2 instances, {f['kills']} kills (-9), uploads up to "
                f"{mib(f['largest_upload'])}, {mib(per_kill)} re-sent per kill"
            )
        elif name.startswith("s3-faults"):
            faults = ", ".join(f"{k} {v}" for k, v in f["s3_faults"].items())
            condition = f"{f['fault_rate']}: {faults} of {f['s3_requests']} S3 requests"
        elif name.startswith("redis-faults"):
            condition = f"{f['fault']}, {f['injections']} times, lease {f['lock_lease_s']} s"
            if f.get("pause_s"):
                condition += f", paused {f['pause_s']} s"
            condition += f", {f['watcher_samples']} watcher samples"
        else:
            continue
        lines.append(uploads_row(name, f, condition))
    lines.append("")
    for name, f in figures.items():
        if name.startswith(("disk-full", "abusive", "early-answers", "fuzz")):
            lines.append(f"**{name}**")
            lines.append("")
            for key, value in f.items():
                if key not in ("scenario", "recorded_at", "python"):
                    lines.append(f"- {key}: {value}")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(load(Path(sys.argv[1]) if len(sys.argv) > 1 else ARTIFACTS)))
