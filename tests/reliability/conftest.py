"""Fixtures of the reliability suite: its size (short for CI, long by flag), its seed, and the
figures section of the terminal summary.

    pytest tests/reliability                       the short version (part of the normal run)
    pytest tests/reliability --reliability-long    the long version (or TUSD_RELIABILITY_LONG=1)
    TUSD_RELIABILITY_SEED=1234 pytest ...          replay a run's random choices
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import TypeVar

import pytest

from tests.reliability.figures import RECORDED

T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    long: bool

    @property
    def name(self) -> str:
        return "long" if self.long else "short"

    def pick(self, short: T, long: T) -> T:
        return long if self.long else short


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> Scale:
    flag = bool(request.config.getoption("--reliability-long", default=False))
    return Scale(flag or os.environ.get("TUSD_RELIABILITY_LONG", "") not in ("", "0"))


@pytest.fixture
def seed() -> int:
    """The seed of this test's random choices: TUSD_RELIABILITY_SEED, or a fresh one (recorded
    in the figures, so a failing run can be replayed)."""
    value = os.environ.get("TUSD_RELIABILITY_SEED")
    return int(value) if value else random.SystemRandom().randrange(1 << 31)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RECORDED:
        return
    terminalreporter.section("reliability figures")
    for name, figures in RECORDED:
        shown = {k: v for k, v in figures.items() if k not in ("scenario", "recorded_at", "python")}
        terminalreporter.write_line(f"{name}:")
        for key, value in shown.items():
            terminalreporter.write_line(f"    {key}: {value}")
