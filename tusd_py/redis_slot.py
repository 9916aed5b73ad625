"""Several commands in a row on one connection of the Redis Cluster node that owns a slot.

redis-py's cluster client takes a pooled connection per command, and two things need commands
in sequence on one connection: `WAIT` counts the replicas that acknowledged the last write *of
its connection*, so it must follow a commit on the connection that sent it; and `ASKING` lets
only the next command *of its connection* into a slot that is being imported.

`run_on_slot` sends its commands as one pipeline on one connection of the slot's primary and
follows the Cluster's answers itself: `MOVED` updates the slot map and sends them again to the
new owner, `ASK` sends `ASKING` and them to the migration's target, `TRYAGAIN` waits a moment;
a lost connection, or a slot without a primary during a failover, refreshes the slot map and
sends them all again, within the client's retries. `follow_redirections` is that loop for
one node, and `WaitingCluster` (redis_client.py) sends every single command through it too, so
that an `ASK` is followed with `ASKING` on the command's own connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster

# Redirections followed for one call before it fails: redis-py's own budget per command.
REDIRECTIONS = RedisCluster.RedisClusterRequestTTL
# A slot without a primary (a failover under way) is looked up again after this pause.
CLUSTER_DOWN_PAUSE = 0.25
# TRYAGAIN: a command with several keys, not all there, met a slot being migrated. 16 tries
# 50 ms apart ride out a migration window of 0.8 s.
TRY_AGAIN_PAUSE = 0.05

Command = tuple[Any, ...]
ConnectionLost = (rexc.ConnectionError, rexc.TimeoutError)
# A command and the options its reply is parsed with (redis-py's `execute_command` kwargs).
Call = tuple[Command, Mapping[str, Any]]


async def run_on_slot(client: RedisCluster, slot: int, commands: Sequence[Command]) -> list[Any]:
    """The replies of `commands`, sent in order on one connection of the primary of `slot`.

    Every command is sent again after a lost connection or a redirection, so each must bear a
    repeat. An error reply (NOSCRIPT, a script error) is raised after the others were read."""
    calls: list[Call] = [(command, {}) for command in commands]
    retries = client.retry.get_retries()
    while True:
        if client._initialize:
            await client.initialize()
        try:
            node = client.nodes_manager.get_node_from_slot(slot)
            return await follow_redirections(client, node, calls)
        except rexc.MaxConnectionsError:
            raise  # our side's limit, not the node's fault
        except rexc.SlotNotCoveredError:
            if not retries:
                raise
            client._initialize = True
            await asyncio.sleep(CLUSTER_DOWN_PAUSE)
        except (rexc.ClusterDownError, rexc.ConnectionError, rexc.TimeoutError):
            if not retries:
                raise
        retries -= 1


async def follow_redirections(
    client: RedisCluster, node: ClusterNode, calls: Sequence[Call]
) -> list[Any]:
    """The replies of `calls`, pipelined on one connection of `node` and sent again wherever
    the Cluster redirects them. A lost connection or a Cluster without a primary for the slot
    marks the slot map for a refresh and raises, for the caller to retry."""
    asking = False
    for _ in range(REDIRECTIONS):
        batch = [
            PipelineCommand(i, *command, **options) for i, (command, options) in enumerate(calls)
        ]
        sent = [PipelineCommand(-1, "ASKING"), *batch] if asking else batch
        try:
            await node.execute_pipeline(sent)
            # A reply lost mid-pipeline is stored as that command's result: the rest is lost too.
            lost = [c.result for c in sent if isinstance(c.result, ConnectionLost)]
            if lost:
                raise lost[0]
        except rexc.MaxConnectionsError:
            raise
        except ConnectionLost as exc:
            # As redis-py does for a command: the node's other connections may be as dead (or
            # READONLY after a failover), and the slot map is probably stale.
            node.update_active_connections_for_reconnect()
            await node.disconnect_free_connections()
            client.nodes_manager.move_node_to_end_of_cached_nodes(node.name)
            client._initialize = True
            exc.last_failed_node_name = node.name  # type: ignore[union-attr]  # read by redis-py
            raise
        results = [c.result for c in batch]
        redirect = next((r for r in results if isinstance(r, rexc.AskError)), None)
        if isinstance(redirect, rexc.MovedError):
            await client.nodes_manager.move_slot(redirect)
            node, asking = client.nodes_manager.get_node_from_slot(redirect.slot_id), False
        elif redirect is not None:
            target = client.get_node(host=redirect.host, port=redirect.port)
            if target is None:  # a node the slot map does not know yet
                client._initialize = True
                raise rexc.ClusterDownError(f"ASK to unknown node {redirect.node_addr}")
            node, asking = target, True
        elif any(isinstance(r, rexc.TryAgainError) for r in results):
            await asyncio.sleep(TRY_AGAIN_PAUSE)  # the same node, ASKING again if it was
        else:
            failed = [r for r in results if isinstance(r, Exception)]
            if any(isinstance(r, rexc.ClusterDownError) for r in failed):
                # A failover under way: its slots have no primary yet.
                client._initialize = True
                await asyncio.sleep(CLUSTER_DOWN_PAUSE)
            if failed:
                raise failed[0]
            return results
    raise rexc.ClusterError(f"still redirected after {REDIRECTIONS} tries")
