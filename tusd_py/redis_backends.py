"""Redis-backed state and locks for many instances (and an S3 store's incomplete parts): what
`create_app` uses when `config.redis_url` is set."""

from __future__ import annotations

from tusd_py.config import Config
from tusd_py.locking.redis import RedisLocker
from tusd_py.redis_client import SharedClient, make_client
from tusd_py.state.redis import RedisState
from tusd_py.stores.base import DataStore


def build_redis_backends(config: Config, store: DataStore) -> tuple[RedisState, RedisLocker]:
    """State and locker for `config.redis_url`, sharing one client and its connection pool.

    Open both with `open()` and close both with `close()`; the client closes with the last.
    """
    if not config.redis_url:
        raise ValueError("build_redis_backends needs config.redis_url")
    client = make_client(config.redis_url)
    shared = SharedClient(client, users=2)
    state = RedisState(client, config.redis_prefix, store, on_close=shared.release)
    locker = RedisLocker(
        client,
        config.redis_prefix,
        lease=config.lock_lease,
        acquire_timeout=config.lock_acquire_timeout,
        on_close=shared.release,
    )
    use_redis_tails(config, store)
    return state, locker


def use_redis_tails(config: Config, store: DataStore) -> None:
    """Let an S3 store keep incomplete parts in this Redis (`--s3-tails`, stores/s3_tails.py)."""
    from tusd_py.stores.s3 import S3Store
    from tusd_py.stores.s3_tails import RedisTails

    if isinstance(store, S3Store) and config.redis_url and config.s3_tails != "s3":
        client = make_client(config.redis_url, decode=False)  # tails are bytes
        store.use_redis_tails(RedisTails(client, config.redis_prefix))
