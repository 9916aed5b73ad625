"""One endpoint whose node is demoted to a replica (what a managed service's failover does
behind its DNS name): the pooled connection to it is dropped and opened again rather than
answering READONLY to every write for ever. Real redis-server processes."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from redis import exceptions as rexc

from tests.support.servers import redis_server, unique_prefix
from tusd_py.config import Config
from tusd_py.redis_connect import client_for


def reconnects() -> float:
    return REGISTRY.get_sample_value("tusd_redis_reconnects_total") or 0.0


async def test_a_demoted_node_drops_the_connection_and_a_promoted_one_is_used_again() -> None:
    with redis_server() as node, redis_server() as other:
        config = Config(redis_url=node.url)
        client = client_for(config, max_connections=1)
        admin = client_for(config, max_connections=1)
        key = unique_prefix()
        try:
            await client.set(key, "1")
            before = reconnects()
            await admin.replicaof("127.0.0.1", other.port)
            with pytest.raises(rexc.ConnectionError, match="became a replica"):
                for _ in range(100):
                    await client.set(key, "2")
                    await asyncio.sleep(0.05)
            # Promoted again (as the provider's DNS would now point at a primary): the same
            # client writes at once, on a connection it opened again.
            await admin.replicaof("NO", "ONE")
            await client.set(key, "3")
            assert await client.get(key) == "3"
            assert reconnects() > before
        finally:
            await client.aclose()
            await admin.aclose()
