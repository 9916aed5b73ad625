"""Helpers shared by the Redis integration tests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from redis.asyncio import Redis

from tests.servers import RedisServer, _start_redis_process, stop


def unique_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


@contextlib.contextmanager
def redis_down(server: RedisServer) -> Iterator[None]:
    """Redis is stopped inside the block and started again (empty) on the same port after it."""
    stop(server.proc)
    try:
        yield
    finally:
        server.proc = _start_redis_process(server.port, server.workdir)


class CommandCounter:
    """Counts the commands a client sends: each is one round trip (no pipelines are used)."""

    def __init__(self, client: Redis) -> None:
        self.commands: list[str] = []
        original = client.execute_command

        async def counting(*args: Any, **options: Any) -> Any:
            self.commands.append(str(args[0]))
            return await original(*args, **options)

        client.execute_command = counting  # type: ignore[method-assign]
