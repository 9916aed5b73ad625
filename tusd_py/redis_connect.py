"""How the Redis client reaches Redis: one endpoint, or a primary found through Sentinel; TLS
and ACL credentials for both (docs/redis.md, "Shapes").

`client_for(config)` is what every part that talks to Redis (state, locks, S3 tails) builds its
client with. Credentials come from `--redis-url` or from `--redis-username`/`--redis-password`,
never both, and are never part of a message: `redacted` hides them in anything printed.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import (
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from tusd_py.metrics import REDIS_FAILOVERS, REDIS_RECONNECTS
from tusd_py.redis_client import (
    CONNECT_TIMEOUT,
    POOL_WAIT,
    RETRIES,
    SOCKET_TIMEOUT,
    RedisClient,
    WaitingPool,
    WritesInPlace,
    make_client,
)
from tusd_py.validation import parse_sentinels

if TYPE_CHECKING:
    from tusd_py.config import Config

log = logging.getLogger(__name__)

# Sentinel answers only "where is the primary": a short timeout lets a dead Sentinel be skipped
# quickly in favour of the next one.
SENTINEL_TIMEOUT = 0.5


class _CountsReconnects:
    """Counts every connect of a connection object after its first: the pool reuses a
    connection object that lost its socket (Redis restarted, failover) by connecting it again."""

    _connected_before = False
    is_connected: bool

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        # Every connect passes here: `connect()` and a send on a closed connection alike (the
        # latter used to bypass the count, so a connection the server closed while idle was
        # made again uncounted).
        fresh = not self.is_connected
        await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]  # a mixin
        if fresh:
            if self._connected_before:
                REDIS_RECONNECTS.inc()
            self._connected_before = True


class _LeavesDemotedNodes:
    """A node that answers READONLY was the primary and is a replica now (a managed service's
    failover behind one DNS name): drop the connection, so the retry connects anew and finds
    the new primary, instead of every write on this pooled connection failing for ever.
    (Sentinel's connections do the same, and ask Sentinel again.)"""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except rexc.ReadOnlyError:
            await self.disconnect()  # type: ignore[attr-defined]
            raise rexc.ConnectionError(
                "the Redis node became a replica (failover); reconnecting"
            ) from None


class CountedConnection(_CountsReconnects, _LeavesDemotedNodes, WritesInPlace, Connection):
    pass


class CountedSSLConnection(_CountsReconnects, _LeavesDemotedNodes, WritesInPlace, SSLConnection):
    pass


class CountedUnixConnection(
    _CountsReconnects, _LeavesDemotedNodes, WritesInPlace, UnixDomainSocketConnection
):
    pass


class CountedSentinelConnection(_CountsReconnects, WritesInPlace, SentinelManagedConnection):
    pass


class CountedSentinelSSLConnection(_CountsReconnects, WritesInPlace, SentinelManagedSSLConnection):
    pass


COUNTED = {
    Connection: CountedConnection,
    SSLConnection: CountedSSLConnection,
    UnixDomainSocketConnection: CountedUnixConnection,
}


class SentinelWaitingPool(SentinelConnectionPool, WaitingPool):
    """Sentinel's pool (asks Sentinel for the primary before each new connection) with the
    waiting and accounting of `WaitingPool`; counts and logs each change of primary it sees."""

    async def get_master_address(self) -> tuple[str, int]:
        before = self.master_address
        address: tuple[str, int] = await super().get_master_address()  # type: ignore[no-untyped-call]
        if before is not None and before != address:
            REDIS_FAILOVERS.inc()
            log.warning(
                "Redis primary of %r moved from %s:%s to %s:%s (failover)",
                self.service_name,
                *before,
                *address,
            )
        return address


@dataclass(frozen=True)
class Topology:
    """What /ready shows: no credentials, only the shape and where the primary is."""

    mode: str  # "single", "sentinel" or "cluster"
    primary: str  # host:port, or the unix socket path (a Cluster: how many primaries)
    master_name: str | None = None


def _tls_kwargs(config: Config) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if config.redis_ca_file:
        kwargs["ssl_ca_certs"] = config.redis_ca_file
    if config.redis_cert_file:
        kwargs["ssl_certfile"] = config.redis_cert_file
        kwargs["ssl_keyfile"] = config.redis_key_file
    return kwargs


def _auth_kwargs(config: Config) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if config.redis_username:
        kwargs["username"] = config.redis_username
    if config.redis_password:
        kwargs["password"] = config.redis_password
    return kwargs


def socket_timeout(config: Config) -> float:
    """A WAIT holds its reply for up to --redis-wait-timeout: the read must outlast it."""
    if config.redis_wait_replicas:
        return max(SOCKET_TIMEOUT, config.redis_wait_timeout + SOCKET_TIMEOUT)
    return SOCKET_TIMEOUT


def client_for(
    config: Config, *, decode: bool = True, max_connections: int | None = None
) -> RedisClient:
    """The client for `config`'s Redis, whatever its shape; see `make_client` for the pool."""
    if config.redis_url is None:
        raise ValueError("client_for needs config.redis_url")
    connections = config.redis_max_connections if max_connections is None else max_connections
    if config.redis_sentinels:
        return _sentinel_client(config, decode=decode, max_connections=connections)
    if config.redis_cluster:
        return make_client(
            config.redis_url,
            cluster=True,
            decode=decode,
            max_connections=connections,
            socket_timeout=socket_timeout(config),
            **_auth_kwargs(config),
            **_tls_kwargs(config),
        )
    client = make_client(
        config.redis_url,
        decode=decode,
        max_connections=connections,
        socket_timeout=socket_timeout(config),
        **_auth_kwargs(config),
        **_tls_kwargs(config),
    )
    if isinstance(client, Redis):
        pool = client.connection_pool
        # Connections are made lazily from this class: swap in the one that counts reconnects.
        pool.connection_class = COUNTED.get(pool.connection_class, pool.connection_class)
    return client


def _sentinel_client(config: Config, *, decode: bool, max_connections: int) -> Redis:
    assert config.redis_url is not None and config.redis_sentinel_master is not None
    from_url = parse_url(config.redis_url)
    tls = from_url.get("connection_class") is SSLConnection
    auth: dict[str, Any] = {k: v for k, v in from_url.items() if k in ("username", "password")}
    auth.update(_auth_kwargs(config))
    tls_kwargs = _tls_kwargs(config) if tls else {}
    # Sentinels speak TLS when the primary does (managed offerings and redis.conf's
    # tls-port for sentinels go together); their password is their own.
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
        # No retries of its own: discovery moves on to the next Sentinel at once (redis-py's
        # default backs off for seconds, also on a refused password).
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
        **tls_kwargs,
    }
    if tls:
        sentinel_kwargs["ssl"] = True
    if config.redis_sentinel_password:
        sentinel_kwargs["password"] = config.redis_sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # untyped in redis-py
        parse_sentinels(config.redis_sentinels), sentinel_kwargs=sentinel_kwargs
    )
    client: Redis = sentinel.master_for(
        config.redis_sentinel_master,
        connection_pool_class=SentinelWaitingPool,
        connection_class=CountedSentinelSSLConnection if tls else CountedSentinelConnection,
        max_connections=max_connections,
        wait=POOL_WAIT,
        db=from_url.get("db", 0),
        decode_responses=decode,
        socket_timeout=socket_timeout(config),
        socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES),
        client_name="tusd-py",
        **auth,
        **tls_kwargs,
    )
    return client


def topology_of(config: Config, client: RedisClient) -> Topology:
    """Where `client` talks to right now (the primary Sentinel last named, for Sentinel; the
    number of primaries, for a Cluster)."""
    if isinstance(client, RedisCluster):
        primaries = len(client.get_primaries())
        return Topology("cluster", f"{primaries} primaries, {len(client.get_replicas())} replicas")
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        address = pool.master_address
        primary = "unknown yet" if address is None else f"{address[0]}:{address[1]}"
        return Topology("sentinel", primary, config.redis_sentinel_master)
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return Topology("single", str(kwargs["path"]))
    return Topology("single", f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}")


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def refusal(exc: BaseException) -> tuple[str, str] | None:
    """(what, option) when `exc` says the configuration is wrong — credentials refused, a
    certificate that does not verify — rather than that Redis is down; else None."""
    chain = _cause_chain(exc)
    for cause in chain:
        if isinstance(cause, MasterNotFoundError):
            # Sentinel's own errors are folded into its "No master found" message.
            return _sentinel_refusal(str(cause))
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"the Redis server's TLS certificate does not verify: {cause.verify_message}",
                "redis_ca_file",
            )
        if "CERTIFICATE_REQUIRED" in str(cause):
            # The server's TLS alert arrives on the first read, as a plain ConnectionError.
            return "Redis demands a client certificate and none was given", "redis_cert_file"
        if isinstance(cause, ssl.SSLError):
            return f"TLS with Redis failed: {cause.reason or cause}", "redis_url"
        if isinstance(cause, rexc.AuthenticationError | rexc.AuthorizationError):
            return f"Redis refused the credentials: {cause}", "redis_password"
        if isinstance(cause, rexc.NoPermissionError):
            return f"the Redis user may not run tusd-py's commands: {cause}", "redis_username"
        if isinstance(cause, rexc.ResponseError) and "NOAUTH" in str(cause):
            return "Redis requires a password and none was given", "redis_password"
    return None


def _sentinel_refusal(text: str) -> tuple[str, str] | None:
    if "Authentication" in text or "invalid username-password" in text or "NOAUTH" in text:
        return "a Redis Sentinel refused the credentials", "redis_sentinel_password"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "a Redis Sentinel's TLS certificate does not verify", "redis_ca_file"
    return None  # no Sentinel answered, or none knows the group: an outage, not configuration
