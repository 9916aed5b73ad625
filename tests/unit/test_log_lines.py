"""Text log lines: nothing a client sends can start a line of its own."""

from __future__ import annotations

import logging

from tusd_py.logs import TextFormatter


def test_control_characters_in_a_text_line_are_escaped() -> None:
    record = logging.makeLogRecord(
        {
            "msg": "%s %s %d",
            "args": ("GET", "/files/x\n2026-01-01 00:00:00 ERROR tusd_py: FORGED\r\x1b[31m", 404),
            "levelname": "INFO",
            "name": "tusd_py.access",
        }
    )
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "/files/x\\n2026-01-01 00:00:00 ERROR tusd_py: FORGED\\r\\x1b[31m 404" in line


def test_a_traceback_still_spans_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.makeLogRecord(
            {"msg": "failed", "levelname": "ERROR", "name": "x", "exc_info": sys.exc_info()}
        )
    text = TextFormatter().format(record)
    first, *rest = text.split("\n")
    assert first.endswith("failed") and any("ValueError: boom" in line for line in rest)
