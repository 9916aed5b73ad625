"""A pre-create hook that limits creations per client address, for servers without a proxy.

Run it with `uvicorn examples.rate_limit:app`. Each address may create `rate` uploads per
`per` seconds (a token bucket: bursts up to `rate`, refilled evenly); the next creation is
answered 429 with `Retry-After`, before anything is stored. The buckets live in this process:
with several instances, each counts its own share (limit at the proxy instead, or keep the
buckets in your Redis).
"""

from __future__ import annotations

import math
import time

from tusd_py import Config, create_app
from tusd_py.hooks import HookEvent, HookResponse, HTTPResponse


class CreationLimit:
    def __init__(self, rate: int, per: float, *, behind_proxy: bool = False) -> None:
        self.rate, self.per, self.behind_proxy = rate, per, behind_proxy
        self.buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)

    def address(self, event: HookEvent) -> str:
        if self.behind_proxy:  # the address the proxy appended last; clients set the others
            forwarded = event.request.header("X-Forwarded-For") or ""
            return forwarded.rsplit(",", 1)[-1].strip()
        return event.request.remote_addr.rpartition(":")[0]

    def __call__(self, event: HookEvent) -> HookResponse | None:
        now, address = time.monotonic(), self.address(event)
        tokens, when = self.buckets.get(address, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - when) * self.rate / self.per)
        if len(self.buckets) > 100_000:  # forget full buckets: they are the default anyway
            self.buckets = {a: b for a, b in self.buckets.items() if b[0] < self.rate}
        if tokens < 1:
            self.buckets[address] = (tokens, now)
            wait = math.ceil((1 - tokens) * self.per / self.rate)
            response = HTTPResponse(429, "too many uploads created; retry later\n")
            response.headers["Retry-After"] = str(wait)
            return HookResponse(reject_upload=True, http_response=response)
        self.buckets[address] = (tokens - 1, now)
        return None


app = create_app(Config(upload_dir="./data"), hooks={"pre-create": CreationLimit(20, 10.0)})
