"""`/ready`: can this instance serve uploads right now? (`/health` only says it is alive.)

Asks the data store and the state store to prove they are reachable (`ready()`: a Redis PING,
an S3 HEAD of the bucket, a writable upload directory). A load balancer takes an instance that
answers 503 out of rotation without restarting it.
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
    problems: list[str] = []
    for name, probe in (("storage", ctx.store.ready), ("state", ctx.state.ready)):
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await probe()
        except TimeoutError:
            problems.append(f"{name}: no answer within {READY_TIMEOUT:.0f}s")
        except Exception as exc:
            problems.append(f"{name}: {getattr(exc, 'message', None) or exc}")
    return problems


def ready_endpoint(ctx: TusContext) -> Callable[[Request], Awaitable[PlainTextResponse]]:
    async def ready(request: Request) -> PlainTextResponse:
        problems = await readiness_problems(ctx)
        if problems:
            log.warning("not ready: %s", "; ".join(problems))
            return PlainTextResponse("not ready\n" + "\n".join(problems) + "\n", status_code=503)
        return PlainTextResponse("ready\n")

    return ready
