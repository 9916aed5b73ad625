"""The loop's reports of broken connections are one line; anything else keeps its traceback."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from tusd_py.loop_errors import handle_loop_error


@pytest.mark.parametrize(
    "exc",
    [
        ssl.SSLError(1, "[SSL: BAD_LENGTH] bad length"),
        ConnectionResetError(104, "reset"),
        RuntimeError("unable to perform operation on <TCPTransport>; the handler is closed"),
    ],
)
def test_a_broken_connection_is_one_line_without_traceback(
    exc: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING):
            context = {"message": "Fatal error on SSL protocol", "exception": exc}
            handle_loop_error(loop, context)
    finally:
        loop.close()
    (record,) = caplog.records
    assert record.exc_info is None
    assert record.getMessage().startswith("Fatal error on SSL protocol: ")


def test_other_errors_go_to_the_default_handler(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR):
            handle_loop_error(loop, {"message": "boom", "exception": ValueError("x")})
    finally:
        loop.close()
    (record,) = caplog.records
    assert record.exc_info is not None
