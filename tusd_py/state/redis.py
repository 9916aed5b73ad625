"""Upload state in Redis: one hash per upload, written only by token-checked Lua scripts.

`{prefix}:{<id>}:state` holds three fields:
    info        the UploadInfo as JSON, without `offset` and `expires_at`
    offset      the committed offset (decimal)
    expires_at  seconds since the epoch, or "" when the upload never expires
It shares its hash tag with the locker's `{prefix}:{<id>}:lock`, so a commit checks the token and
moves the offset in one atomic, single-slot script: one round trip per commit.

Redis is a cache of record, not the only record: the data store keeps an `.info` copy and the
bytes, so a missing hash (evicted, expired, Redis restarted empty) is rebuilt from storage.
Finished uploads keep their hash for `finished_ttl`; unfinished uploads that expire keep it for
`expired_ttl` past their expiry (a short grace: an abandoned upload's state should not outlive it
by days), after which the expiry sweep, which finds uploads through storage, rebuilds it for the
moment it takes to delete the upload.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis import exceptions as rexc
from redis.asyncio import RedisCluster
from redis.commands.core import AsyncScript

from tusd_py.errors import lock_lost, offset_mismatch, storage_unavailable, upload_exists
from tusd_py.info import UploadInfo, dumps
from tusd_py.locking.base import Lock, Locker, ReleaseRequest
from tusd_py.locking.redis import RELEASE_FUNCTION, RedisLock, RedisLocker
from tusd_py.metrics import REDIS_WAIT_TIMEOUTS
from tusd_py.redis_client import (
    CloseHook,
    RedisClient,
    WaitingCluster,
    check_prefix,
    lock_key,
    make_client,
    preload_scripts,
    redis_errors,
    text,
    upload_key,
)
from tusd_py.redis_connect import Topology
from tusd_py.state.base import StateStore
from tusd_py.stores.base import DataStore, WriteClock

log = logging.getLogger(__name__)

DEFAULT_FINISHED_TTL = 7 * 24 * 3600.0
DEFAULT_EXPIRED_TTL = 3600.0

# The fields a read wants; the locker reads them with the lease too (RedisLocker.state_fields).
STATE_FIELDS = ("info", "offset", "expires_at")

# Shared by the scripts below. ARGV numbers arrive as strings; -1 means "none".
_SET_TTL = """
local function set_ttl(key, offset, length, finished_ttl_ms, expire_at_ms)
  if length >= 0 and offset >= length then
    redis.call('PEXPIRE', key, finished_ttl_ms)
  elseif expire_at_ms >= 0 then
    redis.call('PEXPIREAT', key, expire_at_ms)
  else
    redis.call('PERSIST', key)
  end
end
"""

# KEYS: state, lock. ARGV: token, offset, expires_at, length, finished ttl ms, expire-at ms.
# Replies {0} done, {1} lock not ours, {2} no state (caller rewrites it all), {3, current} the
# committed offset is already beyond `offset`.
_COMMIT_FUNCTION = (
    _SET_TTL
    + """
local function commit(state, lock, token, offset, expires_at, length, finished_ms, expire_ms)
  if redis.call('GET', lock) ~= token then return {1} end
  local current = redis.call('HGET', state, 'offset')
  if not current then return {2} end
  if tonumber(offset) < tonumber(current) then return {3, current} end
  redis.call('HSET', state, 'offset', offset, 'expires_at', expires_at)
  set_ttl(state, tonumber(offset), tonumber(length), finished_ms, tonumber(expire_ms))
  return {0}
end
"""
)
_COMMIT = _COMMIT_FUNCTION + "return commit(KEYS[1], KEYS[2], unpack(ARGV))\n"

# The last commit of a request and the release of its lock, in one round trip. KEYS: state,
# lock, then the release's keys. ARGV: the commit's six, then the release's. Replies
# {`_COMMIT`'s reply, instances waiting for the lock}; the lock is released unless the commit
# was refused for a lost lock or must be written again in full ({1}, {2}: the caller then
# releases as usual).
_COMMIT_AND_RELEASE = (
    _COMMIT_FUNCTION
    + RELEASE_FUNCTION
    + """
local reply = commit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
local waiting = {}
if reply[1] == 0 or reply[1] == 3 then
  waiting = release(KEYS[3], KEYS[4], ARGV[7])[2] or {}
end
return {reply, waiting}
"""
)

# KEYS: state, lock. ARGV: token ("" = unchecked), info, offset, expires_at, length,
# finished ttl ms, expire-at ms, mode. Mode "new" writes only where no state exists (replies -1
# otherwise, unless the stored info is this very one: a retry whose first reply was lost, e.g.
# to a failover), "keep" keeps a stored offset, "max" never lowers one. Replies the offset now
# stored, or false when the lock is not ours.
_PUT_FUNCTION = (
    _SET_TTL
    + """
local function put(state, lock, token, info, offset, expires_at, length, finished_ms, expire_ms,
                   mode)
  if token ~= '' and redis.call('GET', lock) ~= token then return false end
  local current = redis.call('HGET', state, 'offset')
  if current and mode == 'new' then
    if redis.call('HGET', state, 'info') ~= info then return -1 end
    if tonumber(current) > tonumber(offset) then offset = current end
  end
  if current and (mode == 'keep'
      or (mode == 'max' and tonumber(current) > tonumber(offset))) then
    offset = current
  end
  redis.call('HSET', state, 'info', info, 'offset', offset, 'expires_at', expires_at)
  set_ttl(state, tonumber(offset), tonumber(length), finished_ms, tonumber(expire_ms))
  return offset
end
"""
)
_PUT = _PUT_FUNCTION + "return put(KEYS[1], KEYS[2], unpack(ARGV))\n"

# An upload's last info write of a request (its completion) and the release of its lock, in one
# round trip. KEYS: state, lock, then the release's keys. ARGV: `_PUT`'s eight (mode "keep"),
# then the release's. Replies {0} when the lock is not ours (nothing written or released), else
# {1, offset stored, instances waiting for the lock}.
_UPDATE_AND_RELEASE = (
    _PUT_FUNCTION
    + RELEASE_FUNCTION
    + """
local stored = put(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
                   ARGV[7], ARGV[8])
if not stored then return {0} end
return {1, stored, release(KEYS[3], KEYS[4], ARGV[9])[2] or {}}
"""
)

# A new upload's state and its lock, in one round trip (a creation with a body). KEYS: state,
# lock. ARGV: token, lease ms, info, offset, expires_at, length, finished ttl ms, expire-at ms.
# Replies 0, writing nothing, when the upload's state or lock exists already, unless both are
# this very creation's (a retry whose first reply was lost, e.g. to a failover).
_CREATE_HELD = (
    _SET_TTL
    + """
local stored = redis.call('HGET', KEYS[1], 'info')
if stored then
  if stored == ARGV[3] and redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'info', ARGV[3], 'offset', ARGV[4], 'expires_at', ARGV[5])
set_ttl(KEYS[1], tonumber(ARGV[4]), tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]))
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""
)

# KEYS: state. ARGV: info, offset, expires_at, length, finished ttl ms, expire-at ms.
# Writes a rebuilt state only if nobody wrote one meanwhile; replies what is stored.
_REBUILD = (
    _SET_TTL
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HMGET', KEYS[1], 'info', 'offset', 'expires_at')
end
redis.call('HSET', KEYS[1], 'info', ARGV[1], 'offset', ARGV[2], 'expires_at', ARGV[3])
set_ttl(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]))
return {ARGV[1], ARGV[2], ARGV[3]}
"""
)


# KEYS: state, lock. ARGV: the state's fields. Replies {holder's token or nil, field values}: a
# HEAD's "is it locked" and state read in one round trip.
_GET_WITH_HOLDER = """
return {redis.call('GET', KEYS[2]), redis.call('HMGET', KEYS[1], unpack(ARGV))}
"""


def _info_json(info: UploadInfo) -> str:
    data = info.to_dict()
    del data["offset"], data["expires_at"]
    return dumps(data)


def _expires_text(info: UploadInfo) -> str:
    return "" if info.expires_at is None else repr(info.expires_at)


def _decode(values: list[Any]) -> UploadInfo:
    info = UploadInfo.from_json(text(values[0]))
    info.offset = int(text(values[1]))
    expires = text(values[2] or "")
    info.expires_at = float(expires) if expires else None
    return info


class RedisState(StateStore):
    """State for many instances sharing one Redis; pair it with a `RedisLocker` on the same
    prefix, whose lease tokens are what `commit` and `update` check."""

    def __init__(
        self,
        redis: RedisClient | str,
        prefix: str,
        store: DataStore,
        finished_ttl: float = DEFAULT_FINISHED_TTL,
        *,
        expired_ttl: float = DEFAULT_EXPIRED_TTL,
        expiration: float = 0.0,
        on_close: CloseHook | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        topology: Callable[[], Topology] | None = None,
    ) -> None:
        """`redis` is a client (closed by `on_close`, if given) or a URL (client owned here).
        With `wait_replicas`, a creation or commit is acknowledged only once that many
        replicas confirm it within `wait_timeout` (docs/redis.md, "Durability"). `expiration`
        (`--expiration`) is how far each PATCH moves an upload's expiry: a rebuild counts it from
        the store's last write."""
        if isinstance(redis, str):
            redis = make_client(redis)
            on_close = redis.aclose
        if finished_ttl <= 0:
            raise ValueError("finished_ttl must be > 0")
        if expired_ttl <= 0:
            raise ValueError("expired_ttl must be > 0")
        if (
            wait_replicas
            and isinstance(redis, RedisCluster)
            and not isinstance(redis, WaitingCluster)
        ):
            # Only ours sends the WAIT on the connection of the commit (redis_slot.py).
            raise ValueError("wait_replicas on a Redis Cluster needs make_client(cluster=True)")
        self._client = redis
        self._on_close = on_close
        self.prefix = check_prefix(prefix)
        self._store = store
        self.finished_ttl = finished_ttl
        self.expired_ttl = expired_ttl
        self.expiration = expiration
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._topology = topology
        self._commit = redis.register_script(_COMMIT)
        self._commit_and_release = redis.register_script(_COMMIT_AND_RELEASE)
        self._put = redis.register_script(_PUT)
        self._create_held = redis.register_script(_CREATE_HELD)
        self._update_and_release = redis.register_script(_UPDATE_AND_RELEASE)
        self._rebuild = redis.register_script(_REBUILD)
        self._get_with_holder = redis.register_script(_GET_WITH_HOLDER)

    async def open(self) -> None:
        # Not fatal: requests answer 503 until Redis is reachable, and succeed afterwards. The
        # start-up check (probes.warn_if_not_ready) warns about it, through `ready`.
        with contextlib.suppress(rexc.RedisError):
            await self._client.ping()
        await preload_scripts(
            self._client,
            [
                self._commit,
                self._commit_and_release,
                self._put,
                self._create_held,
                self._update_and_release,
                self._rebuild,
                self._get_with_holder,
            ],
        )

    async def ready(self) -> None:
        with redis_errors("PING"):
            if isinstance(self._client, RedisCluster):
                # Every primary serves a share of the uploads; a replica down costs nothing yet.
                await self._client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                await self._client.ping()

    async def describe(self) -> list[str]:
        """For /ready: the shape, the primary and its replicas (never credentials)."""
        if isinstance(self._client, RedisCluster):
            # Each primary has replicas of its own; /ready's PING already covers every primary.
            shown = self._topology().primary if self._topology is not None else "connected"
            return [f"redis: cluster, {shown}"]
        with redis_errors("INFO replication"):
            info: dict[str, Any] = await self._client.info("replication")
        topology = self._topology() if self._topology is not None else None
        shape = "single"
        if topology is not None:
            shape = topology.mode
            if topology.master_name:
                shape += f" (master {topology.master_name})"
        lines = [f"redis: {shape}, primary {topology.primary if topology else 'connected'}"]
        master_offset = int(info.get("master_repl_offset", 0))
        replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        in_sync = sum(
            1
            for r in replicas
            if r.get("state") == "online" and master_offset - int(r.get("offset", 0)) <= 0
        )
        lines.append(
            f"redis replicas: {len(replicas)} connected, {in_sync} in sync "
            f"(waiting for {self.wait_replicas} per commit)"
        )
        return lines

    async def close(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await on_close()

    def _keys(self, upload_id: str) -> list[str]:
        return [upload_key(self.prefix, upload_id, "state"), lock_key(self.prefix, upload_id)]

    def _ttl_args(self, info: UploadInfo) -> list[int]:
        """length, finished ttl ms, absolute expiry ms for an unfinished upload (-1: none)."""
        expire_at_ms = -1
        if info.expires_at is not None:
            # A grace period past the expiry; never a time already past, which would delete.
            expire_at_ms = int((max(info.expires_at, time.time()) + self.expired_ttl) * 1000)
        length = -1 if info.length is None else info.length
        return [length, int(self.finished_ttl * 1000), expire_at_ms]

    async def create(self, info: UploadInfo) -> None:
        await self._write(info, info.offset, token="", mode="new")

    async def create_held(
        self, info: UploadInfo, locker: Locker, on_release_request: ReleaseRequest
    ) -> Lock:
        if not isinstance(locker, RedisLocker) or locker.prefix != self.prefix:
            return await super().create_held(info, locker, on_release_request)

        async def take(token: str, lease_ms: int) -> None:
            created, acked = await self._run(
                self._create_held,
                "create-held",
                self._keys(info.id),
                [
                    token,
                    lease_ms,
                    _info_json(info),
                    info.offset,
                    _expires_text(info),
                    *self._ttl_args(info),
                ],
            )
            if not int(created):
                raise upload_exists(info.id)
            confirmed.append(acked)

        confirmed: list[int | None] = []
        lock = await locker.hold_new(info.id, on_release_request, take)
        try:
            self._check_durable(confirmed[0], f"upload {info.id!r} at offset {info.offset}")
        except BaseException:
            await lock.release()  # held, not yet known to the caller: nobody else would
            raise
        return lock

    async def get(self, upload_id: str) -> UploadInfo | None:
        with redis_errors("HMGET"):
            values: list[Any] = await self._client.hmget(
                upload_key(self.prefix, upload_id, "state"), list(STATE_FIELDS)
            )
        if values[0] is None or values[1] is None:
            return await self._rebuild_from_store(upload_id)
        return _decode(values)

    async def get_held(self, upload_id: str, lock: Lock) -> UploadInfo | None:
        # The acquire script read the state with the lease: nobody else can have written it
        # since (every write checks the token), so it is as fresh as a read now.
        values = lock.take_state_read() if isinstance(lock, RedisLock) else None
        if values is None:
            return await self.get(upload_id)
        if values[0] is None or values[1] is None:
            return await self._rebuild_from_store(upload_id)
        return _decode(values)

    async def get_with_holder(self, upload_id: str) -> tuple[UploadInfo | None, str | None]:
        """`get`, and the token of the upload's lock holder (None: free), in one round trip."""
        with redis_errors("EVALSHA get-with-holder"):
            reply: list[Any] = await self._get_with_holder(
                keys=self._keys(upload_id), args=list(STATE_FIELDS)
            )
        holder = None if reply[0] is None else text(reply[0])
        values = reply[1]
        if values[0] is None or values[1] is None:
            return await self._rebuild_from_store(upload_id), holder
        return _decode(values), holder

    async def commit(self, info: UploadInfo, offset: int, lock: Lock) -> None:
        if not lock.valid:
            raise lock_lost(info.id)
        reply, acked = await self._run(
            self._commit,
            "commit",
            self._keys(info.id),
            [lock.token, offset, _expires_text(info), *self._ttl_args(info)],
        )
        await self._committed(info, offset, lock, reply, acked)

    async def commit_and_release(self, info: UploadInfo, offset: int, lock: Lock) -> None:
        if not isinstance(lock, RedisLock):
            await super().commit_and_release(info, offset, lock)
            return
        if not lock.valid:
            raise lock_lost(info.id)
        release_keys, release_args = lock.release_args()
        replies, acked = await self._run(
            self._commit_and_release,
            "commit-and-release",
            [*self._keys(info.id), *release_keys],
            [
                lock.token,
                offset,
                _expires_text(info),
                *self._ttl_args(info),
                *release_args,
            ],
        )
        reply, waiting = replies
        if int(reply[0]) in (0, 3):
            await lock.released_by_script(waiting)
        await self._committed(info, offset, lock, reply, acked)
        await lock.release()  # after {2}: the full rewrite needed the lock; a no-op otherwise

    async def _committed(
        self, info: UploadInfo, offset: int, lock: Lock, reply: list[Any], acked: int | None
    ) -> None:
        """What a commit script's reply means: raise, write the state again, or done."""
        status = int(reply[0])
        if status == 0:
            self._check_durable(acked, f"offset {offset} of upload {info.id!r}")
        if status == 1:
            raise lock_lost(info.id)
        current = offset
        if status == 2:
            # The hash vanished under a live lock (evicted, or expired while the upload sat
            # finished): write everything again, still token-checked.
            current = await self._write(info, offset, token=lock.token, mode="max")
        elif status == 3:
            current = int(text(reply[1]))
        if current != offset:
            # Someone rebuilt the offset from stored bytes past ours; the client must resync.
            raise offset_mismatch(current, offset)
        info.offset = offset
        if info.finished:
            # Once per upload: the storage copy then tells a rebuild it is complete, and when.
            await self._store.save_info(info)

    async def update(self, info: UploadInfo, lock: Lock | None) -> None:
        if lock is not None and not lock.valid:
            raise lock_lost(info.id)
        await self._write(info, info.offset, token="" if lock is None else lock.token, mode="keep")
        # A declared length or new storage details must survive a rebuild from storage.
        await self._store.save_info(info)

    async def update_and_release(self, info: UploadInfo, lock: Lock) -> None:
        if not isinstance(lock, RedisLock):
            await super().update_and_release(info, lock)
            return
        if not lock.valid:
            raise lock_lost(info.id)
        # The storage copy first, while the lock is still ours: once released, a DELETE may
        # remove the upload, and a later write would bring its `.info` back.
        await self._store.save_info(info)
        release_keys, release_args = lock.release_args()
        with redis_errors("EVALSHA update-and-release"):
            reply: list[Any] = await self._update_and_release(
                keys=[*self._keys(info.id), *release_keys],
                args=[
                    lock.token,
                    _info_json(info),
                    info.offset,
                    _expires_text(info),
                    *self._ttl_args(info),
                    "keep",
                    *release_args,
                ],
            )
        if not int(reply[0]):
            raise lock_lost(info.id)
        info.offset = int(text(reply[1]))
        await lock.released_by_script(reply[2])

    async def delete(self, upload_id: str) -> None:
        with redis_errors("DEL"):
            await self._client.delete(upload_key(self.prefix, upload_id, "state"))

    async def _write(self, info: UploadInfo, offset: int, *, token: str, mode: str) -> int:
        length, finished_ttl_ms, expire_at_ms = self._ttl_args(info)
        args: list[Any] = [
            token,
            _info_json(info),
            offset,
            _expires_text(info),
            length,
            finished_ttl_ms,
            expire_at_ms,
            mode,
        ]
        if mode == "keep":
            # An update (a declared length): storage's .info has it too, no need to wait.
            with redis_errors("EVALSHA put"):
                stored = await self._put(keys=self._keys(info.id), args=args)
            acked = None
        else:
            stored, acked = await self._run(self._put, "put", self._keys(info.id), args)
        if stored is None:
            raise lock_lost(info.id)
        if stored == -1:
            raise upload_exists(info.id)
        self._check_durable(acked, f"upload {info.id!r} at offset {offset}")
        current = int(text(stored))
        if mode != "max":
            info.offset = current
        return current

    async def _run(
        self, script: AsyncScript, name: str, keys: list[str], args: list[Any]
    ) -> tuple[Any, int | None]:
        """Run a write script; with `wait_replicas`, WAIT for the replicas on the same
        connection (WAIT counts only that connection's writes) and say how many confirmed."""
        if not self.wait_replicas:
            with redis_errors(f"EVALSHA {name}"):
                return await script(keys=keys, args=args), None
        for _ in range(2):
            with redis_errors(f"EVALSHA {name} + WAIT"):
                try:
                    reply, acked = await self._eval_and_wait(script, keys, args)
                except rexc.NoScriptError:
                    await self._client.script_load(script.script)
                    continue
            return reply, int(acked)
        raise storage_unavailable(f"Redis lost the {name} script twice in a row")

    async def _eval_and_wait(
        self, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> list[Any]:
        """The script and a WAIT after it, on one connection. A retry after a dropped
        connection sends both again, so the WAIT follows a write of its own connection (a
        commit or creation that succeeds writes, even when the values are the same as before)."""
        evalsha = ("EVALSHA", script.sha, len(keys), *keys, *args)
        wait = ("WAIT", self.wait_replicas, max(1, int(self.wait_timeout * 1000)))
        if isinstance(self._client, WaitingCluster):
            # On the connection of the primary owning the upload's slot: its replicas count.
            return await self._client.run_on_key_slot(keys[0], [evalsha, wait])
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.execute_command(*evalsha)
            pipe.execute_command(*wait)
            replies: list[Any] = await pipe.execute()
        return replies

    def _check_durable(self, acked: int | None, what: str) -> None:
        if acked is None or acked >= self.wait_replicas:
            return
        REDIS_WAIT_TIMEOUTS.inc()
        # Not acknowledged: a failover now could lose it. The primary has it, so the client's
        # HEAD finds it (or, after a failover, the older offset a replica had) and resumes.
        raise storage_unavailable(
            f"Redis stored {what} but {acked} of {self.wait_replicas} replicas confirmed it "
            f"within {self.wait_timeout:g}s, so it is not acknowledged; resume from HEAD",
            operation="Redis WAIT",
        )

    async def _rebuild_from_store(self, upload_id: str) -> UploadInfo | None:
        info = await self._store.load_info(upload_id)
        if info is None:
            return None
        # The stored bytes are the truth; the .info copy's offset may lag behind them.
        offset = await self._store.stored_offset(info)
        if info.length is not None:
            offset = min(offset, info.length)
        info.offset = offset
        info.expires_at = await self._rebuilt_expiry(info)
        with redis_errors("EVALSHA rebuild"):
            values: list[Any] = await self._rebuild(
                keys=[upload_key(self.prefix, upload_id, "state")],
                args=[_info_json(info), offset, _expires_text(info), *self._ttl_args(info)],
            )
        return _decode(values)

    async def _rebuilt_expiry(self, info: UploadInfo) -> float | None:
        """The expiry of an upload rebuilt from storage. Each PATCH moves it in Redis only, so the
        `.info` copy's may be long past for an upload still being written. A PATCH's counts from
        its start, so counted from the store's last write it is (but for a clock tick) no
        earlier than the one lost; an abandoned upload's stays past, and the sweep deletes it."""
        if info.expires_at is None or info.finished or self.expiration <= 0:
            return info.expires_at
        if not isinstance(self._store, WriteClock):
            return info.expires_at
        written = await self._store.last_write(info)
        if written is None:
            return info.expires_at
        return max(info.expires_at, written + self.expiration)
