"""RedisLocker against a real redis-server.

Each `RedisLocker` gets its own client (its own connection pool), as two server instances would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from tests.support.servers import RedisServer, redis_down, unique_prefix
from tusd_py.errors import TusError
from tusd_py.ids import new_upload_id
from tusd_py.locking.base import Lock
from tusd_py.locking.redis import RedisLocker
from tusd_py.redis_client import lock_key, make_client

MakeLocker = Callable[..., RedisLocker]


@pytest.fixture
async def make_locker(redis: RedisServer) -> AsyncIterator[MakeLocker]:
    """`make_locker(lease=..., acquire_timeout=...)`: a locker with its own client."""
    prefix = unique_prefix()
    made: list[RedisLocker] = []

    def make(lease: float = 1.0, acquire_timeout: float = 2.0) -> RedisLocker:
        locker = RedisLocker(redis.url, prefix, lease=lease, acquire_timeout=acquire_timeout)
        made.append(locker)
        return locker

    yield make
    for locker in made:
        await locker.close()


@pytest.fixture
async def client(redis: RedisServer) -> AsyncIterator[Redis]:
    c = make_client(redis.url)
    assert isinstance(c, Redis)
    yield c
    await c.aclose()


class Holder:
    """A request holding a lock: counts release requests, may let go after `delay`."""

    def __init__(self, let_go_after: float | None = 0.05) -> None:
        self.let_go_after = let_go_after
        self.requests = 0
        self.asked = asyncio.Event()
        self.lock: Lock | None = None
        self.released_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def on_release_request(self) -> None:
        self.requests += 1
        self.asked.set()
        if self.let_go_after is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._let_go())

    async def _let_go(self) -> None:
        assert self.let_go_after is not None
        await asyncio.sleep(self.let_go_after)  # "commit what it has, answer"
        assert self.lock is not None
        await self.lock.release()
        self.released_at = time.monotonic()

    async def take(self, locker: RedisLocker, upload_id: str) -> Lock:
        self.lock = await locker.acquire(upload_id, self.on_release_request)
        return self.lock


def ignore() -> None:
    pass


async def test_acquire_release(make_locker: MakeLocker, client: Redis) -> None:
    locker = make_locker()
    upload_id = new_upload_id()
    lock = await locker.acquire(upload_id, ignore)
    assert lock.valid
    key = lock_key(locker.prefix, upload_id)
    assert await client.get(key) == lock.token
    await lock.release()
    assert not lock.valid
    assert await client.exists(key) == 0
    await lock.release()  # twice is harmless
    again = await locker.acquire(upload_id, ignore)
    assert again.token != lock.token
    await again.release()


async def test_handover_between_instances(make_locker: MakeLocker) -> None:
    a, b = make_locker(), make_locker()
    upload_id = new_upload_id()
    holder = Holder(let_go_after=0.2)
    await holder.take(a, upload_id)
    started = time.monotonic()
    lock = await b.acquire(upload_id, ignore)
    acquired = time.monotonic()
    assert holder.requests >= 1
    assert holder.released_at is not None
    # Woken by the "free" notice, not by a slow poll.
    assert acquired - holder.released_at < 0.1
    assert acquired - started < 1.0
    assert lock.valid and holder.lock is not None and not holder.lock.valid
    await lock.release()


async def test_handover_within_one_instance(make_locker: MakeLocker) -> None:
    locker = make_locker()
    upload_id = new_upload_id()
    holder = Holder(let_go_after=0.0)
    await holder.take(locker, upload_id)
    lock = await asyncio.wait_for(locker.acquire(upload_id, ignore), 1.0)
    assert holder.requests >= 1
    await lock.release()


async def test_chain_of_handovers(make_locker: MakeLocker) -> None:
    lockers = [make_locker() for _ in range(3)]
    upload_id = new_upload_id()
    holders = [Holder(let_go_after=0.02) for _ in range(6)]
    started = time.monotonic()
    for i, holder in enumerate(holders):
        await asyncio.wait_for(holder.take(lockers[i % 3], upload_id), 2.0)
    assert time.monotonic() - started < 2.0
    assert all(h.requests >= 1 for h in holders[:-1])
    assert holders[-1].lock is not None
    await holders[-1].lock.release()


async def test_concurrent_waiters_get_the_lock_one_at_a_time(make_locker: MakeLocker) -> None:
    lockers = [make_locker(acquire_timeout=5.0) for _ in range(4)]
    upload_id = new_upload_id()
    inside = 0
    most = 0

    async def work(locker: RedisLocker) -> None:
        nonlocal inside, most
        lock = await locker.acquire(upload_id, ignore)
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0.05)
        inside -= 1
        await lock.release()

    await asyncio.gather(*(work(lk) for lk in lockers for _ in range(3)))
    assert most == 1


async def test_acquire_timeout_is_423(make_locker: MakeLocker) -> None:
    a, b = make_locker(), make_locker(acquire_timeout=0.5)
    upload_id = new_upload_id()
    stubborn = Holder(let_go_after=None)
    await stubborn.take(a, upload_id)
    started = time.monotonic()
    with pytest.raises(TusError) as err:
        await b.acquire(upload_id, ignore)
    waited = time.monotonic() - started
    assert (err.value.status, err.value.code) == (423, "upload-locked")
    assert 0.45 < waited < 1.0
    assert stubborn.requests >= 1
    assert stubborn.lock is not None and stubborn.lock.valid
    await stubborn.lock.release()


async def test_renewal_keeps_the_lease(make_locker: MakeLocker, client: Redis) -> None:
    a, b = make_locker(lease=0.3), make_locker(acquire_timeout=0.2)
    upload_id = new_upload_id()
    lock = await a.acquire(upload_id, ignore)
    await asyncio.sleep(1.0)  # more than three leases
    assert lock.valid
    assert await client.get(lock_key(a.prefix, upload_id)) == lock.token
    with pytest.raises(TusError):
        await b.acquire(upload_id, ignore)
    await lock.release()


async def test_crashed_holder_lease_expires(make_locker: MakeLocker) -> None:
    crashed, b = make_locker(lease=0.6), make_locker(acquire_timeout=3.0)
    upload_id = new_upload_id()
    stale = await crashed.acquire(upload_id, ignore)
    taken = time.monotonic()
    await crashed.close()  # stops renewal and listening; nothing is released
    assert not stale.valid
    lock = await b.acquire(upload_id, ignore)
    waited = time.monotonic() - taken
    assert 0.5 < waited < 0.9  # right after the lease ran out
    await stale.release()  # a stale release must not free the new holder's lock
    with pytest.raises(TusError):
        await make_locker(acquire_timeout=0.1).acquire(upload_id, ignore)
    await lock.release()


async def test_lost_lease_is_noticed_by_the_holder(make_locker: MakeLocker, client: Redis) -> None:
    a = make_locker(lease=0.3)
    upload_id = new_upload_id()
    holder = Holder(let_go_after=None)
    lock = await holder.take(a, upload_id)
    # Someone else's token (e.g. the lease expired while this process was frozen).
    await client.set(lock_key(a.prefix, upload_id), "someone-else", px=5000)
    await asyncio.wait_for(holder.asked.wait(), 1.0)
    assert not lock.valid
    await lock.release()
    assert await client.get(lock_key(a.prefix, upload_id)) == "someone-else"


async def test_redis_outage_is_503_then_recovers(
    redis: RedisServer, make_locker: MakeLocker
) -> None:
    a, b = make_locker(), make_locker()
    upload_id = new_upload_id()
    await (await a.acquire(upload_id, ignore)).release()  # both subscribed before the outage
    await (await b.acquire(upload_id, ignore)).release()
    with redis_down(redis):
        started = time.monotonic()
        with pytest.raises(TusError) as err:
            await a.acquire(upload_id, ignore)
        assert err.value.status == 503
        assert "Redis is unreachable" in err.value.message
        assert err.value.headers["Retry-After"]
        assert time.monotonic() - started < 5
    lock = await a.acquire(upload_id, ignore)
    await lock.release()
    # Handover works again: the listeners resubscribe by themselves, and release requests
    # lost meanwhile are repeated.
    holder = Holder(let_go_after=0.0)
    await holder.take(a, upload_id)
    lock = await b.acquire(upload_id, ignore)
    assert holder.requests >= 1
    await lock.release()


async def test_holder_loses_lock_when_redis_restarts_empty(
    redis: RedisServer, make_locker: MakeLocker
) -> None:
    a = make_locker(lease=0.3)
    upload_id = new_upload_id()
    holder = Holder(let_go_after=None)
    lock = await holder.take(a, upload_id)
    with redis_down(redis):
        pass
    await asyncio.wait_for(holder.asked.wait(), 1.0)
    assert not lock.valid
    await lock.release()
