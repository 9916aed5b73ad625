"""Figures of the reliability suite: printed at the end of the run and written as JSON.

Each scenario records one dict under a name; it lands in
`test-artifacts/reliability/<name>.json` (gitignored) and in the "reliability figures" section of
pytest's terminal summary. docs/reliability.md quotes them.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"

# (name, figures) in the order recorded; read by the terminal summary in conftest.py.
RECORDED: list[tuple[str, dict[str, Any]]] = []


def record(name: str, figures: dict[str, Any]) -> None:
    figures = {
        "scenario": name,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        **figures,
    }
    RECORDED.append((name, figures))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=False) + "\n")
    print(f"reliability figures {name}: {json.dumps(figures)}")


def rate(part: int, whole: int) -> float:
    return 1.0 if whole == 0 else round(part / whole, 4)
