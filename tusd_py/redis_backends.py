"""Redis-backed state and locks for many instances: what `create_app` uses when
`config.redis_url` is set. A store that keeps data of its own in Redis is told the URL too."""

from __future__ import annotations

from tusd_py.config import Config
from tusd_py.locking.redis import LISTENER_CONNECTIONS, RedisLocker
from tusd_py.redis_client import SharedClient
from tusd_py.redis_connect import client_for, topology_of
from tusd_py.state.redis import STATE_FIELDS, RedisState
from tusd_py.stores.base import DataStore, RedisUser


def build_redis_backends(config: Config, store: DataStore) -> tuple[RedisState, RedisLocker]:
    """State and locker for `config.redis_url`, sharing one client and its connection pool:
    `config.redis_max_connections` for commands, plus the one the handover subscription keeps.

    Open both with `open()` and close both with `close()`; the client closes with the last.
    """
    if not config.redis_url:
        raise ValueError("build_redis_backends needs config.redis_url")
    client = client_for(config, max_connections=config.redis_max_connections + LISTENER_CONNECTIONS)
    shared = SharedClient(client, users=2)
    state = RedisState(
        client,
        config.redis_prefix,
        store,
        expired_ttl=config.redis_expired_ttl,
        expiration=config.expiration,
        on_close=shared.release,
        wait_replicas=config.redis_wait_replicas,
        wait_timeout=config.redis_wait_timeout,
        topology=lambda: topology_of(config, client),
    )
    locker = RedisLocker(
        client,
        config.redis_prefix,
        lease=config.lock_lease,
        acquire_timeout=config.lock_acquire_timeout,
        on_close=shared.release,
        state_fields=STATE_FIELDS,  # a holder's first state read comes with the lease
    )
    if isinstance(store, RedisUser):
        store.use_redis(config)
    return state, locker
