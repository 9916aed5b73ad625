"""Helpers shared by the Redis integration tests (the servers are in tests/support/servers.py)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis


class CommandCounter:
    """Counts the commands a client sends: each is one round trip (no pipelines are used)."""

    def __init__(self, client: Redis) -> None:
        self.commands: list[str] = []
        original = client.execute_command

        async def counting(*args: Any, **options: Any) -> Any:
            self.commands.append(str(args[0]))
            return await original(*args, **options)

        client.execute_command = counting  # type: ignore[method-assign]
