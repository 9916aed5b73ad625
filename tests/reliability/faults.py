"""Fault injection the server processes can see: the fault proxy run in a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.support.fault_proxy import Decide, FaultProxy


@contextlib.contextmanager
def proxy_thread(upstream_port: int, decide: Decide, stall: float = 3.0) -> Iterator[FaultProxy]:
    """A `FaultProxy` in front of 127.0.0.1:`upstream_port`, served by its own event loop so that
    separate server processes can use it while the test blocks or runs its own loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
    thread.start()
    proxy = FaultProxy("127.0.0.1", upstream_port, decide, stall_seconds=stall)
    try:
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)
        yield proxy
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
