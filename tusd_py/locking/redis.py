"""Redis locker: per-upload leases with tokens, renewed while held, handed over across instances.

- A token is `<instance>.<random>`: it names the instance that holds the lease. Each instance
  subscribes to a channel of its own, `<prefix>:locks:<instance>` (sharded pub/sub, SSUBSCRIBE,
  on a Redis Cluster), so a message reaches only the instance it is for, never the fleet.
- Acquire is one Lua script: take the lease (SET PX) when free, else add this instance to the
  upload's waiters (a set) and reply the holder's token; the waiter then publishes a release
  request to the holder's channel (or hands it over in-process when it holds the lease itself).
  The script cannot publish on a Cluster: the holder's channel lives in another slot.
- A releaser deletes the lease only if the token is still its own, and gets the waiting
  instances back: each is sent "free" so its waiters retry at once instead of at their next poll.
- Waiters also poll with a short backoff capped by the lease's remaining time, so a crashed
  holder's lease is taken over right after it expires and lost messages cost only a poll.
- `let_go` (a reader such as HEAD, which does not take the lock) marks itself as a waiter and
  sends the same release request, then polls until the holder's token is gone; readers in
  one instance waiting for one holder share that loop.
- A background task per held lock renews the lease at a third of its length; a renewal that
  finds another token (or cannot reach Redis before the lease ends) marks the lock invalid and
  asks the holder to stop. State writes check the token in Redis, so a stale holder never wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from redis.asyncio.cluster import ClusterPubSub, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tusd_py.errors import locked
from tusd_py.locking.base import Lock, Locker, ReleaseRequest
from tusd_py.redis_client import (
    DEFAULT_MAX_CONNECTIONS,
    CloseHook,
    RedisClient,
    check_prefix,
    lock_key,
    make_client,
    preload_scripts,
    redis_errors,
    text,
    upload_key,
)

log = logging.getLogger(__name__)

# Waiters poll between these bounds; "free" messages usually wake them well before.
MIN_POLL = 0.02
MAX_POLL = 0.25
# Ask the same holder again this often, in case the first request was lost (pub/sub is
# fire-and-forget and the holder's instance may have been reconnecting).
REASK_INTERVAL = 1.0
# How long a waiter's mark lives; refreshed on every attempt, so it only has to outlive a poll.
WAIT_MARK_MS = 2000
# How long an acquire waits for this instance's subscription before going ahead anyway.
SUBSCRIBE_WAIT = 0.5
# The handover subscription keeps one pooled connection for itself; size pools with it in mind.
LISTENER_CONNECTIONS = 1
# A release that cannot reach Redis (or finds the pool full) is tried again, RELEASE_BACKOFF
# seconds later and doubling, so that one dropped connection does not leave the upload locked
# for the rest of the lease. The script only deletes our own token, so a repeat is harmless.
RELEASE_ATTEMPTS = 4
RELEASE_BACKOFF = 0.05

# KEYS: lock, waiters, and the upload's state hash. ARGV: token, lease ms, wait-mark ms, this
# instance, then the state fields to read along with the lease (`state_fields`): the request
# reads the state right after taking the lock, and this saves it the round trip.
# Taking a lease we already hold succeeds, which makes a retried call harmless.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if #ARGV > 4 then
    return {1, '', 0, redis.call('HMGET', KEYS[3], unpack(ARGV, 5))}
  end
  return {1, '', 0}
end
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {0, holder, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lock, waiters. ARGV: holder's token, wait-mark ms, this instance.
# Replies -2 when `holder` no longer holds the lock, else the lease's remaining ms (PTTL).
_LET_GO = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -2 end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('PTTL', KEYS[1])
"""

# KEYS: lock. ARGV: token, lease ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# The release, as a Lua function so that RedisState's commit-and-release script runs the same
# code (`release_args` gives its keys and arguments). Replies {1, instances that wait} once
# released, {0} when the lease is not ours (any more): the caller tells those instances "free"
# (on a Cluster a script cannot publish to their channels, which live in other slots).
RELEASE_FUNCTION = """
local function release(lock_key, waiters_key, token)
  if redis.call('GET', lock_key) == token then
    redis.call('DEL', lock_key)
    local waiting = redis.call('SMEMBERS', waiters_key)
    redis.call('DEL', waiters_key)
    return {1, waiting}
  end
  return {0}
end
"""

# KEYS: lock, waiters. ARGV: token.
_RELEASE = RELEASE_FUNCTION + "return release(KEYS[1], KEYS[2], ARGV[1])\n"


def holder_instance(token: str) -> str:
    """The instance named in a lease token ("" for a token of a version before per-instance
    channels: such a holder is not asked, and its lease is waited out)."""
    instance, dot, _ = token.partition(".")
    return instance if dot else ""


class RedisLock(Lock):
    def __init__(
        self,
        locker: RedisLocker,
        upload_id: str,
        token: str,
        on_release_request: ReleaseRequest,
        deadline: float,
    ) -> None:
        self.upload_id = upload_id
        self.token = token
        self._locker = locker
        self._on_release_request = on_release_request
        # time.monotonic() by which the lease has surely ended unless renewed: measured from
        # before the request was sent, so it errs on the early side.
        self._deadline = deadline
        self._lost = False
        self._released = False
        self._renewal: asyncio.Task[None] | None = None
        # The state fields the acquire script read with the lease (the locker's
        # `state_fields`), until RedisState takes them: see `take_state_read`.
        self._state_read: list[Any] | None = None

    @property
    def valid(self) -> bool:
        return not self._lost and not self._released and time.monotonic() < self._deadline

    def request_release(self) -> None:
        try:
            self._on_release_request()
        except Exception:
            log.exception("on_release_request of upload %s failed", self.upload_id)

    def lose(self) -> None:
        if self._lost or self._released:
            return
        self._lost = True
        log.warning("lost the lock of upload %s (lease expired or taken over)", self.upload_id)
        self.request_release()

    def take_state_read(self) -> list[Any] | None:
        """The state fields read when the lease was taken, once: a later read must ask Redis."""
        values, self._state_read = self._state_read, None
        return values

    def release_args(self) -> tuple[list[str], list[str]]:
        """Keys and arguments of `RELEASE_FUNCTION` for this lock."""
        return self._locker._release_keys_args(self)

    async def released_by_script(self, waiting: list[Any]) -> None:
        """Another script (RedisState's commit-and-release) released the lease in Redis; the
        instances `waiting` for it (that script's `RELEASE_FUNCTION` reply) are told "free"."""
        if not self._released:
            self._released = True
            self._locker._forget(self)
            await self._locker._announce_free(self.upload_id, waiting)

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._locker._forget(self)
        # Shielded: a request cancelled in its `finally` should still hand the lock back
        # rather than make the next request wait for the lease to run out.
        await asyncio.shield(self._locker._release(self))


class RedisLocker(Locker):
    def __init__(
        self,
        redis: RedisClient | str,
        prefix: str = "tusd",
        *,
        lease: float = 15.0,
        acquire_timeout: float = 10.0,
        on_close: CloseHook | None = None,
        state_fields: Sequence[str] = (),
    ) -> None:
        """`redis` is a client (closed by `on_close`, if given) or a URL (client owned here).

        `state_fields`: fields of the upload's state hash that acquire reads with the lease
        (`RedisLock.take_state_read`), so that the holder's first state read costs nothing.
        """
        if isinstance(redis, str):
            redis = make_client(
                redis, max_connections=DEFAULT_MAX_CONNECTIONS + LISTENER_CONNECTIONS
            )
            on_close = redis.aclose
        if lease <= 0 or acquire_timeout < 0:
            raise ValueError("lease must be > 0 and acquire_timeout >= 0")
        self._client = redis
        self._on_close = on_close
        self.prefix = check_prefix(prefix)
        self.lease = lease
        self.acquire_timeout = acquire_timeout
        self._cluster = isinstance(redis, RedisCluster)
        #: This process's name in lease tokens and waiter sets, and the channel it listens on.
        self.instance = secrets.token_hex(8)
        self.channel = self.channel_of(self.instance)
        self.state_fields = list(state_fields)
        self._acquire_script = redis.register_script(_ACQUIRE)
        self._let_go_script = redis.register_script(_LET_GO)
        self._renew_script = redis.register_script(_RENEW)
        self._release_script = redis.register_script(_RELEASE)
        self._held: dict[str, RedisLock] = {}  # by token
        self._waiters: dict[str, set[asyncio.Event]] = {}  # by upload id
        self._letting_go: dict[tuple[str, str], asyncio.Task[None]] = {}  # by (id, holder)
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._told_not_subscribed = False  # the first failure to subscribe is a warning
        self._closed = False

    def channel_of(self, instance: str) -> str:
        return f"{self.prefix}:locks:{instance}"

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    async def open(self) -> None:
        """Load the scripts and subscribe to release requests now rather than on the first
        acquire (not fatal when Redis is unreachable: both happen again when needed)."""
        await preload_scripts(
            self._client,
            [self._acquire_script, self._let_go_script, self._renew_script, self._release_script],
        )
        await self._ensure_listener()

    async def acquire(self, upload_id: str, on_release_request: ReleaseRequest) -> Lock:
        if self._closed:
            raise RuntimeError("RedisLocker is closed")
        await self._ensure_listener()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.acquire_timeout
        token = f"{self.instance}.{secrets.token_hex(12)}"
        keys = [
            lock_key(self.prefix, upload_id),
            upload_key(self.prefix, upload_id, "waiters"),
            upload_key(self.prefix, upload_id, "state"),
        ]
        last_holder = ""
        last_ask = -math.inf
        delay = MIN_POLL
        with self._woken_on_free(upload_id) as wake:
            while True:
                # Cleared before the attempt so that a "free" arriving while it runs is kept.
                wake.clear()
                now = loop.time()
                force = now - last_ask >= REASK_INTERVAL
                sent = time.monotonic()
                with redis_errors("EVALSHA acquire"):
                    reply: list[Any] = await self._acquire_script(
                        keys=keys,
                        args=[
                            token,
                            self._lease_ms,
                            WAIT_MARK_MS,
                            self.instance,
                            *self.state_fields,
                        ],
                    )
                if int(reply[0]) == 1:
                    lock = self._hold(upload_id, token, on_release_request, sent + self.lease)
                    if len(reply) > 3:
                        lock._state_read = reply[3]
                    return lock
                holder = text(reply[1])
                if force or holder != last_holder:
                    await self._ask(upload_id, holder)
                    last_ask = now
                last_holder = holder
                delay = await self._pause(wake, upload_id, deadline, delay, int(reply[2]))

    async def hold_new(
        self,
        upload_id: str,
        on_release_request: ReleaseRequest,
        take: Callable[[str, int], Awaitable[None]],
    ) -> RedisLock:
        """Hold the lock of an upload being created, taken by `take(token, lease_ms)`: a script
        that writes the upload's first state and the lease in one step, so a creation with a
        body costs no acquire round trip (RedisState.create_held). Raises what `take` raises."""
        if self._closed:
            raise RuntimeError("RedisLocker is closed")
        await self._ensure_listener()
        token = f"{self.instance}.{secrets.token_hex(12)}"
        sent = time.monotonic()
        await take(token, self._lease_ms)
        return self._hold(upload_id, token, on_release_request, sent + self.lease)

    async def holder(self, upload_id: str) -> str | None:
        with redis_errors("GET"):
            token = await self._client.get(lock_key(self.prefix, upload_id))
        return None if token is None else text(token)

    async def let_go(self, upload_id: str, holder: str) -> None:
        if self._closed:
            raise RuntimeError("RedisLocker is closed")
        key = (upload_id, holder)
        task = self._letting_go.get(key)
        if task is None:
            task = asyncio.create_task(
                self._wait_for_let_go(upload_id, holder), name=f"tusd-lock-let-go-{upload_id}"
            )
            self._letting_go[key] = task
            task.add_done_callback(functools.partial(self._let_go_done, key))
        # Shielded: one reader giving up (client gone) must not end the others' wait.
        await asyncio.shield(task)

    def _let_go_done(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        self._letting_go.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every reader that still waits has seen it

    async def _wait_for_let_go(self, upload_id: str, holder: str) -> None:
        await self._ensure_listener()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.acquire_timeout
        keys = [lock_key(self.prefix, upload_id), upload_key(self.prefix, upload_id, "waiters")]
        last_ask = -math.inf
        delay = MIN_POLL
        with self._woken_on_free(upload_id) as wake:
            while True:
                wake.clear()
                now = loop.time()
                ask = now - last_ask >= REASK_INTERVAL
                with redis_errors("EVALSHA let-go"):
                    pttl = int(
                        await self._let_go_script(
                            keys=keys,
                            args=[holder, WAIT_MARK_MS, self.instance],
                        )
                    )
                if pttl == -2:
                    return
                if ask:
                    await self._ask(upload_id, holder)
                    last_ask = now
                delay = await self._pause(wake, upload_id, deadline, delay, pttl)

    @contextlib.contextmanager
    def _woken_on_free(self, upload_id: str) -> Iterator[asyncio.Event]:
        """An event the listener sets when `upload_id`'s lock is announced free."""
        wake = asyncio.Event()
        self._waiters.setdefault(upload_id, set()).add(wake)
        try:
            yield wake
        finally:
            waiters = self._waiters.get(upload_id)
            if waiters is not None:
                waiters.discard(wake)
                if not waiters:
                    del self._waiters[upload_id]

    @staticmethod
    async def _pause(
        wake: asyncio.Event, upload_id: str, deadline: float, delay: float, pttl: int
    ) -> float:
        """Wait for a "free" or the next poll (423 once `deadline` passed); the next delay."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise locked(upload_id)
        pause = min(delay, remaining)
        if pttl >= 0:
            # Try again right after a crashed holder's lease runs out.
            pause = min(pause, pttl / 1000 + 0.002)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await wake.wait()
        return min(delay * 2, MAX_POLL)

    async def close(self) -> None:
        """Stop listening and renewing. Held leases are not released: they expire, as after a
        crash, since their holders may still be writing."""
        if self._closed:
            return
        self._closed = True
        tasks: list[asyncio.Task[None]] = []
        if self._listener is not None:
            tasks.append(self._listener)
        tasks.extend(self._letting_go.values())
        for lock in list(self._held.values()):
            lock._lost = True
            if lock._renewal is not None:
                tasks.append(lock._renewal)
        self._held.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._on_close is not None:
            await self._on_close()

    # -- held locks -----------------------------------------------------------------------

    def _hold(
        self, upload_id: str, token: str, on_release_request: ReleaseRequest, deadline: float
    ) -> RedisLock:
        lock = RedisLock(self, upload_id, token, on_release_request, deadline)
        self._held[token] = lock
        lock._renewal = asyncio.create_task(self._renew(lock), name=f"tusd-lock-renew-{upload_id}")
        return lock

    def _forget(self, lock: RedisLock) -> None:
        self._held.pop(lock.token, None)
        if lock._renewal is not None:
            lock._renewal.cancel()

    def _release_keys_args(self, lock: RedisLock) -> tuple[list[str], list[str]]:
        keys = [
            lock_key(self.prefix, lock.upload_id),
            upload_key(self.prefix, lock.upload_id, "waiters"),
        ]
        return keys, [lock.token]

    async def _release(self, lock: RedisLock) -> None:
        # Never raises: failing to release only delays the next holder until the lease ends,
        # and a release runs in `finally` blocks where an error would hide the real outcome.
        keys, args = self._release_keys_args(lock)
        delay = RELEASE_BACKOFF
        for attempt in range(1, RELEASE_ATTEMPTS + 1):
            if self._closed:
                return  # the client may be closed; the lease runs out as after a crash
            try:
                reply: list[Any] = await self._release_script(keys=keys, args=args)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # Past the lease's end there is nothing left to release.
                if attempt == RELEASE_ATTEMPTS or time.monotonic() + delay >= lock._deadline:
                    log.warning(
                        "could not release upload %s after %d attempts (lease will expire): %s",
                        lock.upload_id,
                        attempt,
                        exc,
                    )
                    return
                log.info("retrying the release of upload %s: %s", lock.upload_id, exc)
            except RedisError as exc:
                log.warning(
                    "could not release upload %s (lease will expire): %s", lock.upload_id, exc
                )
                return
            else:
                if int(reply[0]) == 1:
                    await self._announce_free(lock.upload_id, reply[1])
                return
            await asyncio.sleep(delay)
            delay *= 2

    async def _renew(self, lock: RedisLock) -> None:
        interval = self.lease / 3
        pause = interval
        key = lock_key(self.prefix, lock.upload_id)
        while True:
            await asyncio.sleep(pause)
            sent = time.monotonic()
            try:
                renewed = await self._renew_script(keys=[key], args=[lock.token, self._lease_ms])
            except RedisError as exc:
                if time.monotonic() >= lock._deadline:
                    lock.lose()
                    return
                log.warning("could not renew the lock of upload %s: %s", lock.upload_id, exc)
                # Keep trying, more often, while the lease may still be ours.
                pause = min(interval, 0.5)
                continue
            if not int(renewed):
                lock.lose()
                return
            lock._deadline = sent + self.lease
            pause = interval

    # -- release requests and "free" notices ----------------------------------------------

    async def _announce_free(self, upload_id: str, waiting: list[Any]) -> None:
        for instance in waiting:
            await self._send(text(instance), f"free {upload_id}")

    async def _ask(self, upload_id: str, holder: str) -> None:
        """Ask the instance holding `upload_id` under `holder` to let go."""
        instance = holder_instance(holder)
        if instance:
            await self._send(instance, f"release {upload_id} {holder}")

    async def _send(self, instance: str, message: str) -> None:
        """Deliver `message` to `instance`'s listener: in-process for this one, else one PUBLISH
        (SPUBLISH on a Cluster). Best effort, as pub/sub is anyway: a lost message costs a
        re-ask or a poll, so a failure here must not fail the request."""
        if instance == self.instance:
            self._dispatch(message)
            return
        channel = self.channel_of(instance)
        try:
            if self._cluster:
                await self._client.spublish(channel, message)
            else:
                await self._client.publish(channel, message)
        except RedisError as exc:
            log.info("could not send %r to instance %s: %s", message, instance, exc)

    async def _ensure_listener(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="tusd-lock-listener")
        if not self._subscribed.is_set():
            # Without the subscription handover still works, through re-asks; just slower.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SUBSCRIBE_WAIT):
                    await self._subscribed.wait()

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._client.pubsub()
            try:
                if isinstance(pubsub, ClusterPubSub):
                    await self._listen_sharded(pubsub)
                else:
                    await pubsub.subscribe(self.channel)
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and self._received(message, "", backoff):
                            backoff = 0.1
            except (RedisError, RedisClusterException, _Unsubscribed) as exc:
                if self._subscribed.is_set():
                    log.warning("lost the Redis subscription for lock handover: %s", exc)
                elif not self._told_not_subscribed:
                    # An ACL without `&<prefix>:locks:*` lands here on every try, silently:
                    # handovers then wait for re-asks and the holder's lease.
                    self._told_not_subscribed = True
                    log.warning(
                        "cannot subscribe to %s for lock handover (retrying): %s",
                        self.channel,
                        exc,
                    )
                if self._cluster:
                    await self._refresh_slots()
            except Exception:
                log.exception("lock handover listener failed; restarting it")
            finally:
                self._subscribed.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _listen_sharded(self, pubsub: ClusterPubSub) -> None:
        """SSUBSCRIBE on the primary that owns our channel's slot; messages reach that node
        only, not the whole Cluster. When the slot moves (resharding, failover) the node ends
        the subscription, or the connection breaks: the caller then subscribes again."""
        assert isinstance(self._client, RedisCluster)
        await self._client.initialize()  # the slot map, to find the channel's node
        await pubsub.ssubscribe(self.channel)
        backoff = 0.1
        while True:
            message = await pubsub.get_sharded_message(timeout=1.0)
            if message is not None and self._received(message, "s", backoff):
                backoff = 0.1

    def _received(self, message: dict[str, Any], kind: str, backoff: float) -> bool:
        """Handle one pub/sub message (`kind` "s" for sharded); True once subscribed."""
        if message["type"] == f"{kind}subscribe":
            self._subscribed.set()
            return True
        if message["type"] == f"{kind}message":
            self._dispatch(text(message["data"]))
        elif message["type"] == f"{kind}unsubscribe":
            raise _Unsubscribed("Redis ended the subscription (its slot moved)")
        return False

    async def _refresh_slots(self) -> None:
        # The slot map is refreshed when a command meets a moved or dead node; an idle instance
        # would otherwise keep subscribing to the primary that is gone. EXISTS of the channel's
        # name goes to the node owning the channel's slot.
        with contextlib.suppress(RedisError):
            await self._client.exists(self.channel)

    def _dispatch(self, message: str) -> None:
        kind, _, rest = message.partition(" ")
        if kind == "release":
            upload_id, _, token = rest.partition(" ")
            lock = self._held.get(token)
            if lock is not None and lock.upload_id == upload_id:
                lock.request_release()
        elif kind == "free":
            for wake in self._waiters.get(rest, ()):
                wake.set()


class _Unsubscribed(Exception):
    pass
