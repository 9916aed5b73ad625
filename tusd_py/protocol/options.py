from __future__ import annotations

from starlette.responses import Response

from tusd_py.protocol.checksum import ALGORITHMS
from tusd_py.protocol.context import TusContext
from tusd_py.protocol.headers import TUS_VERSION
from tusd_py.protocol.responses import tus_response


async def handle_options(ctx: TusContext) -> Response:
    headers = {"Tus-Version": TUS_VERSION, "Tus-Extension": ",".join(ctx.extensions)}
    if ctx.config.max_size:
        headers["Tus-Max-Size"] = str(ctx.config.max_size)
    if "checksum" in ctx.extensions:
        headers["Tus-Checksum-Algorithm"] = ",".join(ALGORITHMS)
    return tus_response(204, headers)
