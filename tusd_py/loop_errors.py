"""The event loop's own reports of a connection that broke under a transport, as one line.

When a peer dies mid-stream (a Redis primary killed during a failover, a client that vanishes
during a TLS handshake) uvloop and asyncio report "Fatal error on SSL protocol" or "Fatal error
on transport" through the loop's exception handler, whose default logs a full traceback for
what is an ordinary, already handled event: the command on that connection fails and is answered
by its caller (503, a retry). Anything else still goes to the default handler.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

log = logging.getLogger(__name__)

BROKEN_CONNECTION = (ConnectionError, ssl.SSLError, TimeoutError)


def _broken_connection(message: str, exc: object) -> bool:
    if isinstance(exc, BROKEN_CONNECTION):
        return True
    # uvloop's TLS protocol writing its close_notify into a transport the peer already closed
    return (
        message.startswith("Fatal error on")
        and isinstance(exc, RuntimeError)
        and "the handler is closed" in str(exc)
    )


def handle_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    message = str(context.get("message") or "connection error")
    if _broken_connection(message, exc):
        log.warning("%s: %s: %s", message, type(exc).__name__, exc)
        return
    loop.default_exception_handler(context)


def install(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_exception_handler(handle_loop_error)
