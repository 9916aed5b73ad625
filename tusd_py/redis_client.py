"""What `RedisState` and `RedisLocker` share: the client, the key layout and error mapping.

Every key of one upload carries the hash tag `{<id>}`, so each Lua script, transaction and
multi-key command touches one slot and runs unchanged on Redis Cluster (`make_client(...,
cluster=True)`). See docs/redis.md for the whole layout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

from redis import exceptions as rexc
from redis._parsers import AsyncCommandsParser
from redis._parsers.base import _AsyncRESPBase
from redis._parsers.hiredis import _AsyncHiredisParser
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.maint_notifications import MaintNotificationsConfig

from tusd_py.errors import TusError, storage_unavailable
from tusd_py.metrics import REDIS_POOL_EXHAUSTED, REDIS_POOL_WAIT
from tusd_py.redis_slot import Command, follow_redirections, run_on_slot

# Commands are tiny, so a reply that takes seconds means Redis (or the path to it) is in
# trouble: fail fast with a 503 rather than hold a client for tens of seconds.
SOCKET_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0
# A couple of quick retries ride out a dropped pooled connection (e.g. after a Redis restart);
# more would only delay the 503 during a real outage. Every script we send is idempotent.
RETRIES = 2
# A command holds a connection for one round trip, so this many serve far more concurrent
# requests; when all are busy a command queues for a free one instead of failing.
DEFAULT_MAX_CONNECTIONS = 256
# How long a command queues for a connection before its request answers 503. A wait this long
# means Redis is slow or the pool far too small, not a burst.
POOL_WAIT = 5.0

CloseHook = Callable[[], Awaitable[None]]
# What state, locks and S3 tails talk to: one Redis endpoint, or a Redis Cluster.
RedisClient = Redis | RedisCluster


class WritesInPlace:
    """Sends a command without redis-py's `asyncio.wait_for` around the write, which makes a
    task of its own per command (about a quarter of a Redis HEAD's CPU, docs/performance.md
    item 20). A command is a few hundred bytes that the socket takes at once; only when the
    transport holds some back does the write wait for it to drain, under the socket timeout."""

    _writer: asyncio.StreamWriter | None
    socket_timeout: float | None
    is_connected: bool
    health_check_interval: float
    next_health_check: float

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        writer = self._writer
        due = check_health and self.health_check_interval
        if (
            writer is None
            or not self.is_connected
            or (due and asyncio.get_running_loop().time() > self.next_health_check)
        ):
            # connecting, the periodic health check and their failures: redis-py's own path
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        if isinstance(command, str):
            command = command.encode()
        try:
            if isinstance(command, bytes):
                writer.write(command)
            else:
                writer.writelines(command)
            if writer.transport.get_write_buffer_size():
                async with asyncio.timeout(self.socket_timeout):
                    await writer.drain()
        except TimeoutError:
            await self._drop()
            raise rexc.TimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self._drop()
            raise rexc.ConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            await self._drop()  # a write cut short leaves the reply stream unknown
            raise

    async def _drop(self) -> None:
        await self.disconnect(nowait=True)  # type: ignore[attr-defined]  # redis-py's, below


class PoolExhausted(rexc.ConnectionError):
    """No connection of the pool became free within its wait."""


class WaitingPool(BlockingConnectionPool):
    """A `BlockingConnectionPool` that records how long each command waited for a connection,
    and serves a full pool first come, first served.

    The deadline is our own rather than the pool's `timeout` so that a full pool is told apart
    from a connect that failed (redis-py raises the same ConnectionError for both). When every
    connection is in use, a command joins a queue and a released connection is handed to the
    oldest in it: redis-py's own pool lets whoever asks after a release take the connection
    (its condition's predicate), so under a steady load a queued command waited until the load
    stopped, and lock renewals in the queue lost their leases (1,000 uploads at once).
    """

    def __init__(self, *, wait: float = POOL_WAIT, **kwargs: Any) -> None:
        super().__init__(timeout=None, **kwargs)
        self.wait = wait
        self._queue: collections.deque[asyncio.Future[AbstractConnection]] = collections.deque()

    def _full(self) -> bool:
        return not self._available_connections and (
            len(self._in_use_connections) >= self.max_connections
        )

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self._queue or self._full():
            return await self._queued_connection()
        if self._available_connections and not self._in_maintenance:
            # An idle connection: taken without the condition, the timeout and redis-py's
            # observability events around it, which cost a Redis HEAD a fifth of its CPU
            # (docs/performance.md, item 20). Taking it does not await, so no other task sees
            # the pool half-changed.
            idle: AbstractConnection = self._available_connections.pop()
            self._in_use_connections.add(idle)
            if _ready(idle) is not True:  # checked in place first: no coroutine per command
                await self._ready_or_released(idle)
            REDIS_POOL_WAIT.observe(0.0)
            return idle
        start = time.perf_counter()
        deadline = asyncio.timeout(self.wait)
        try:
            async with deadline:
                # untyped in redis-py
                connection: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except TimeoutError:
            if not deadline.expired():
                raise
            raise self._exhausted() from None
        REDIS_POOL_WAIT.observe(time.perf_counter() - start)
        return connection

    async def _queued_connection(self) -> AbstractConnection:
        start = time.perf_counter()
        turn: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        deadline = asyncio.timeout(self.wait)
        try:
            async with deadline:
                connection = await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                await self.release(turn.result())  # handed over as the wait ended: pass it on
            else:
                turn.cancel()  # still queued: skipped by the next release
            if isinstance(exc, TimeoutError) and deadline.expired():
                raise self._exhausted() from None
            raise
        await self._ready_or_released(connection)
        REDIS_POOL_WAIT.observe(time.perf_counter() - start)
        return connection

    async def _ready_or_released(self, connection: AbstractConnection) -> None:
        """Make a connection taken from the pool (idle, or handed over) fit to send on: as it
        is when connected with nothing unread, else connected again — redis-py's own check of
        unread bytes is off while maintenance notifications are on, so it would hand out a
        connection with a stray reply as it is. Given back to the pool if that fails."""
        try:
            ready = _ready(connection)
            if ready is None:
                await self.ensure_connection(connection)
            elif not ready:
                if connection.is_connected:
                    await connection.disconnect(nowait=True)
                await connection.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await self.release(connection)
            raise

    def _exhausted(self) -> PoolExhausted:
        REDIS_POOL_EXHAUSTED.inc()
        return PoolExhausted(
            f"all {self.max_connections} Redis connections stayed busy for {self.wait:g}s"
        )

    async def release(self, connection: AbstractConnection) -> None:
        if connection in self._in_use_connections:
            if self._queue and connection.should_reconnect():  # type: ignore[no-untyped-call]
                # before a turn is picked: a turn picked, then an await, could be cancelled
                await connection.disconnect()  # the waiter connects it again
            while self._queue:
                turn = self._queue.popleft()
                if not turn.done():
                    turn.set_result(connection)  # stays in use: the oldest waiter's now
                    return
            if (
                not self._in_maintenance
                and not self._condition._waiters  # nobody to wake: no need for notify()
                and not connection.should_reconnect()  # type: ignore[no-untyped-call]
            ):
                self._in_use_connections.remove(connection)
                self._available_connections.append(connection)
                return
        await super().release(connection)


def _ready(connection: AbstractConnection) -> bool | None:
    """Connected, with nothing left unread (what redis-py's `ensure_connection` checks) — by
    the parser's own test, without a coroutine per call; None: a parser this does not know,
    which the full path asks."""
    parser = getattr(connection, "_parser", None)
    if isinstance(parser, _AsyncHiredisParser):
        pending = parser._reader is not None and parser._reader.has_data()
    elif isinstance(parser, _AsyncRESPBase):
        pending = bool(parser._buffer)
    else:
        return None
    stream = parser._stream
    if pending or not connection.is_connected or not parser._connected or stream is None:
        return False
    return not (stream._buffer or stream.at_eof())  # type: ignore[attr-defined]


class InPlaceConnection(WritesInPlace, Connection):
    pass


class InPlaceSSLConnection(WritesInPlace, SSLConnection):
    pass


_IN_PLACE: dict[type[Connection], type[Connection]] = {
    Connection: InPlaceConnection,
    SSLConnection: InPlaceSSLConnection,
}


class WaitingCluster(RedisCluster):
    """A `RedisCluster` whose commands queue for a connection like `WaitingPool`'s do.

    redis-py's cluster client keeps a pool per node and fails at once (MaxConnectionsError)
    when one is full. Here every command and pipeline first takes one of `max_connections`
    permits, for the whole client, within `wait` seconds; each node's pool is allowed as many
    connections plus the handover subscription's, so a command holding a permit always finds
    one. The difference from one endpoint: the budget is shared by all nodes, so a slow node
    can hold permits that commands for the others then wait for.
    """

    def __init__(self, *, max_connections: int, wait: float = POOL_WAIT, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections + CLUSTER_EXTRA_CONNECTIONS, **kwargs)
        # redis-py sets its nodes' connection class itself: the one that writes in place instead,
        # for the nodes known now and those the slot map adds later (both read these kwargs).
        plain = self.nodes_manager.connection_kwargs["connection_class"]
        writes_in_place = _IN_PLACE.get(plain, plain)
        self.nodes_manager.connection_kwargs["connection_class"] = writes_in_place
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = writes_in_place
        self.commands_parser = _SharedCommandsParser(f"{kwargs.get('host')}:{kwargs.get('port')}")
        self.pool_wait = wait
        self.permits = max_connections
        self._permits = asyncio.Semaphore(max_connections)

    @contextlib.asynccontextmanager
    async def connection_permit(self) -> AsyncIterator[None]:
        start = time.perf_counter()
        deadline = asyncio.timeout(self.pool_wait)
        try:
            async with deadline:
                await self._permits.acquire()
        except TimeoutError:
            if not deadline.expired():
                raise
            REDIS_POOL_EXHAUSTED.inc()
            raise PoolExhausted(
                f"all {self.permits} Redis connections stayed busy for {self.pool_wait:g}s"
            ) from None
        REDIS_POOL_WAIT.observe(time.perf_counter() - start)
        try:
            yield
        finally:
            self._permits.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.connection_permit(), _closed_socket_is_connection_error():
            return await super().execute_command(*args, **kwargs)

    async def _execute_command(self, target_node: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        # redis-py's own sends the ASKING of an ASK redirection and the command it admits on two
        # pooled connections, so the migration's target answers MOVED back to the source until
        # the redirections run out; here both go on one (redis_slot.py). redis-py's
        # execute_command around it still retries after a lost connection.
        replies = await follow_redirections(self, target_node, [(args, kwargs)])
        return replies[0]

    async def run_on_key_slot(self, key: str, commands: Sequence[Command]) -> list[Any]:
        """`commands` in a row on one connection of the primary that owns `key`'s slot (for
        a WAIT after a write: redis_slot.py), holding one permit."""
        async with self.connection_permit(), _closed_socket_is_connection_error():
            return await run_on_slot(self, self.keyslot(key), commands)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py
        return _WaitingPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py does


class _SharedCommandsParser(AsyncCommandsParser):
    """redis-py reads the whole COMMAND table (~250 ms of parsing) for every cluster client and
    again after every topology refresh, e.g. each reconnect during a failover. The table only
    changes with the Redis version, so one per seed node and process is read."""

    _tables: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, seed: str) -> None:
        super().__init__()
        self._seed = seed

    async def initialize(self, node: ClusterNode | None = None) -> None:
        table = self._tables.get(self._seed)
        if table is None:
            await super().initialize(node)
            self._tables[self._seed] = table = self.commands
        else:
            if node is not None:
                self.node = node
            self.commands = table


class _WaitingPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = self.cluster_client
        assert isinstance(client, WaitingCluster)
        async with client.connection_permit(), _closed_socket_is_connection_error():
            return await super().execute(raise_on_error, allow_redirections)


@contextlib.asynccontextmanager
async def _closed_socket_is_connection_error() -> AsyncIterator[None]:
    # While a failed primary is retried, redis-py's cluster client disconnects connections that
    # other commands are just setting up or writing to; those then fail with RuntimeError ("the
    # handler is closed", from uvloop) or AttributeError (its writer is already None) instead of
    # a ConnectionError. Only redis-py runs inside: it is a lost connection, a 503, not a 500.
    try:
        yield
    except (RuntimeError, AttributeError) as exc:
        raise rexc.ConnectionError(
            f"Redis connection broke under a command ({type(exc).__name__}: {exc})"
        ) from exc


# Per node beyond the command budget: the lock-handover subscription's connection.
CLUSTER_EXTRA_CONNECTIONS = 1


def make_client(
    url: str,
    *,
    cluster: bool = False,
    decode: bool = True,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_wait: float | None = None,
    socket_timeout: float = SOCKET_TIMEOUT,
    **connection_kwargs: Any,
) -> RedisClient:
    """A redis.asyncio client with settings suited to a request path (short timeouts); replies
    are str, or bytes with `decode=False`. Commands beyond `max_connections` at once wait up to
    `pool_wait` seconds (POOL_WAIT) for a connection, then fail with `PoolExhausted`.
    `connection_kwargs` (credentials, TLS files) apply where the URL does not set them.

    With `cluster`, `url` is one node of a Redis Cluster (the others are discovered from it) and
    the client is a `RedisCluster`, which follows MOVED/ASK redirections and refreshes its slot
    map after a failover."""
    wait = POOL_WAIT if pool_wait is None else pool_wait
    settings: dict[str, Any] = {
        "decode_responses": decode,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES),
        "client_name": "tusd-py",
        **connection_kwargs,
    }
    if cluster:
        # Off: Redis OSS refuses the handshake, and redis-py's cluster connections then wrote
        # to a closed socket (RuntimeError, not a RedisError) while a failed primary was retried.
        settings["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
        return WaitingCluster.from_url(url, max_connections=max_connections, wait=wait, **settings)
    pool = WaitingPool.from_url(url, max_connections=max_connections, wait=wait, **settings)
    return Redis.from_pool(pool)


async def preload_scripts(client: RedisClient, scripts: Iterable[AsyncScript]) -> None:
    """Load `scripts` into Redis at start, so that no request pays for a NOSCRIPT reply and a
    SCRIPT LOAD. Not fatal: when Redis is unreachable now, or later forgets them (SCRIPT FLUSH,
    a restart, a promoted replica), redis-py loads a script again on its first NOSCRIPT. On a
    Cluster redis-py sends SCRIPT LOAD to every primary."""
    with contextlib.suppress(rexc.RedisError):
        for script in scripts:
            script.sha = await client.script_load(script.script)


def check_prefix(prefix: str) -> str:
    # A brace in the prefix would become the hash tag and put all uploads in one slot.
    if not prefix or "{" in prefix or "}" in prefix:
        raise ValueError(f"Redis prefix must be non-empty and free of braces: {prefix!r}")
    return prefix


def upload_key(prefix: str, upload_id: str, kind: str) -> str:
    return f"{prefix}:{{{upload_id}}}:{kind}"


def lock_key(prefix: str, upload_id: str) -> str:
    """Holds the current holder's token; written by the locker, checked by state writes."""
    return upload_key(prefix, upload_id, "lock")


def text(value: str | bytes) -> str:
    """Replies are str with our client, bytes with a caller's client without decode_responses."""
    return value.decode() if isinstance(value, bytes) else value


def redis_unavailable(exc: rexc.RedisError, operation: str = "command") -> TusError:
    """The 503 of a failed Redis call; `operation` (`EVALSHA commit`, `HMGET`) is logged."""
    logged = f"Redis {operation}"
    if isinstance(exc, PoolExhausted):
        # Busy rather than down: the same request a moment later usually finds a connection.
        return storage_unavailable(
            f"Redis connection pool exhausted: {exc}; retry shortly",
            retry_after=1,
            operation=logged,
        )
    if isinstance(exc, rexc.AuthenticationError | rexc.AuthorizationError | rexc.NoPermissionError):
        # A ConnectionError to redis-py, but no outage: the URL's credentials are wrong.
        return storage_unavailable(f"Redis refused the configured credentials: {exc}")
    if isinstance(exc, MasterNotFoundError):
        # Its text lists every Sentinel's client at length; the gist is enough.
        return storage_unavailable(
            f"Redis is unreachable: {str(exc).split(' : ')[0]} (no Sentinel named a primary)",
            operation=logged,
        )
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError):
        return storage_unavailable(f"Redis is unreachable: {exc}", operation=logged)
    # OOM, READONLY after a failover, cluster resharding, a script error: nothing the client
    # did wrong, and a retry may well succeed.
    return storage_unavailable(f"Redis refused the operation: {exc}", operation=logged)


@contextlib.contextmanager
def redis_errors(operation: str) -> Iterator[None]:
    """Turn redis-py exceptions into the 503 the client sees, naming `operation` (the command,
    and for a script which one: `EVALSHA commit`) for the log; other errors pass unchanged."""
    try:
        yield
    except rexc.RedisError as exc:
        raise redis_unavailable(exc, operation) from exc


class SharedClient:
    """One client used by several owners; closed when the last of them closes."""

    def __init__(self, client: RedisClient, users: int) -> None:
        self.client = client
        self._users = users

    async def release(self) -> None:
        self._users -= 1
        if self._users == 0:
            await self.client.aclose()
