"""`/ready`: can this instance serve uploads right now? (`/health` only says it is alive.)

Asks the data store and the state store to prove they are reachable (`ready()`: a Redis PING,
an S3 HEAD of the bucket, a writable upload directory). The CLI runs the same checks once at
start-up and logs a warning for each problem (`warn_if_not_ready`). A load balancer takes an
instance that answers 503 out of rotation without restarting it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse

from tusd_py.protocol.context import TusContext

log = logging.getLogger("tusd_py.probes")

READY_TIMEOUT = 5.0


async def readiness_problems(ctx: TusContext) -> list[str]:
    """What keeps this instance from serving uploads, one line each (empty: nothing)."""

    async def problem(name: str, probe: Callable[[], Awaitable[None]]) -> str | None:
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await probe()
        except TimeoutError:
            return f"{name}: no answer within {READY_TIMEOUT:.0f}s"
        except Exception as exc:
            return f"{name}: {getattr(exc, 'message', None) or exc}"
        return None

    found = await asyncio.gather(
        problem("storage", ctx.store.ready), problem("state", ctx.state.ready)
    )
    return [p for p in found if p is not None]


async def warn_if_not_ready(ctx: TusContext) -> None:
    """At start-up, one warning per problem (a missing bucket, no credentials, Redis down): the
    server starts anyway, since the cause may be fixed while it runs, and /ready says the same."""
    for found in await readiness_problems(ctx):
        log.warning("not ready: %s (serving anyway; /ready answers 503 until fixed)", found)


async def topology_lines(ctx: TusContext) -> list[str]:
    """What a state store with a topology (Redis: shape, primary, replicas) says of it; a
    failure here is no readiness problem of its own (`ready` found any that matter)."""
    describe = getattr(ctx.state, "describe", None)
    if describe is None:
        return []
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            lines: list[str] = await describe()
    except Exception:
        return []
    return lines


def ready_endpoint(ctx: TusContext) -> Callable[[Request], Awaitable[PlainTextResponse]]:
    async def ready(request: Request) -> PlainTextResponse:
        problems = await readiness_problems(ctx)
        if problems:
            log.warning("not ready: %s", "; ".join(problems))
            return PlainTextResponse("not ready\n" + "\n".join(problems) + "\n", status_code=503)
        details = "".join(line + "\n" for line in await topology_lines(ctx))
        return PlainTextResponse("ready\n" + details)

    return ready
