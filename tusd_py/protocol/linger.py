"""Answering a request whose body was not read to its end, without losing the answer.

Some answers come before the body is read (a wrong offset, an unknown upload, a body too large)
or stop reading it halfway (a lock handed over to another request, a body that went idle). The
connection cannot be reused then, so it is closed; but a socket closed with unread bytes sends a
reset, and a client still sending its body then often sees "connection reset" rather than the
answer, or loses the answer altogether (some TCP stacks discard what the client had not read).

So the answer goes out whole first (its Content-Length tells the client it has all of it); then
the rest of the body is read and dropped, for at most `LINGER_SECONDS` and `LINGER_BYTES`, and
only then is the connection closed: a lingering close, as Apache and nginx do it. A client that
finished sending within those bounds sees a clean close; one that sends more still gets a reset,
after the answer.
"""

from __future__ import annotations

import asyncio

from starlette.responses import Response
from starlette.types import Receive, Send

LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024


async def respond_and_drain(response: Response, receive: Receive, send: Send) -> None:
    """Send `response` (which says `Connection: close`), drain the request body within bounds,
    then end the response, which makes the server close the connection."""
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body, "more_body": True})
    drained = 0
    try:
        async with asyncio.timeout(LINGER_SECONDS):
            while drained < LINGER_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    break
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        pass
    await send({"type": "http.response.body", "body": b"", "more_body": False})
