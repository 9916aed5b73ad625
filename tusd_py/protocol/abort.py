"""Ending a response that cannot be finished: close its connection, quietly.

Once a download's 200 and part of its body are sent, a store failure can no longer become an
error response. Raising out of the ASGI app would close the connection too, but with uvicorn's
"Exception in ASGI application" traceback on top of the handler's own log line; returning with
the body unfinished logs "ASGI callable returned without completing response". So the HTTP layer
(tusd_py/connections.py) puts a function in the request's scope["state"] that closes the
connection as if the client had gone away, and the handler calls it after logging the cause once.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.types import Scope

# The key in a request's ASGI scope["state"] of the function that closes its connection.
ABORT_CONNECTION = "tusd.abort_connection"


def offer_abort(state: MutableMapping[str, Any], abort: Callable[[], None]) -> None:
    """Called by the HTTP layer with the request's scope["state"]."""
    state.setdefault(ABORT_CONNECTION, abort)


def abort_connection(scope: Scope) -> Callable[[], None] | None:
    """The function that closes this request's connection, where the HTTP layer offers one
    (not in-process under httpx's ASGITransport, nor under another ASGI server)."""
    abort = scope.get("state", {}).get(ABORT_CONNECTION)
    return abort if callable(abort) else None
