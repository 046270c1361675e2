"""The Leases and ChangeFeed contract (tuningd.ports): every shared store passes these same tests.

A `World` is one store as several instances see it: `connect()` opens another instance's
connection, `advance(s)` lets `s` seconds of the store's clock pass (a manual clock for memory;
a real wait for a store whose clock is the database's, hence the short ttls), and `inject_gap()`
makes every feed yield "*" (None where a store cannot do that on demand).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.store_jobs import make_job
from tuningd import machine
from tuningd.machine import Event
from tuningd.model import LocalState
from tuningd.ports import ChangeFeed, Fenced, JobStore, Leases
from tuningd.store import Store
from tuningd.store_memory import GAP, MemoryBacking, MemoryStore

TTL_S = 0.5


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class World:
    """One shared store, as the instances on it see it."""

    connect: Callable[[], Awaitable[Any]]
    advance: Callable[[float], Awaitable[None]]
    inject_gap: Callable[[], None] | None


@pytest.fixture(params=["memory"])
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    """Each kind of shared store, fresh, with no lease taken."""
    opened: list[Any] = []
    clock = _Clock()
    backing = MemoryBacking(clock)

    async def connect() -> Any:
        store = backing.connect()
        opened.append(store)
        return store

    async def advance(s: float) -> None:
        clock.t += s

    try:
        yield World(connect, advance, backing.inject_gap)
    finally:
        for store in opened:
            await store.close()


async def _next(feed: AsyncIterator[str]) -> str:
    return await asyncio.wait_for(anext(feed), timeout=5.0)


# ----- leases -----

async def test_first_acquire_takes_the_lease_and_others_wait(world: World) -> None:
    """A free lease goes to the first holder; another holder gets None while it runs."""
    a, b = await world.connect(), await world.connect()
    assert isinstance(a, Leases)
    lease = await a.acquire("a", TTL_S)
    assert lease is not None and lease.holder == "a" and lease.epoch >= 1
    assert 0 < lease.remaining_s <= TTL_S
    assert await b.acquire("b", TTL_S) is None
    seen = await b.current()
    assert seen is not None and (seen.holder, seen.epoch) == ("a", lease.epoch)


async def test_acquire_by_the_holder_renews_with_the_same_epoch(world: World) -> None:
    """The holder acquiring again while its lease runs keeps its epoch and extends the lease."""
    a, b = await world.connect(), await world.connect()
    first = await a.acquire("a", TTL_S)
    await world.advance(TTL_S * 0.6)
    again = await a.acquire("a", TTL_S)
    assert first is not None and again is not None and again.epoch == first.epoch
    await world.advance(TTL_S * 0.6)
    assert await b.acquire("b", TTL_S) is None


async def test_expired_lease_passes_with_a_larger_epoch(world: World) -> None:
    """Past its ttl without a renew, the lease goes to the next acquire with epoch + 1, and the
    old holder can no longer renew it."""
    a, b = await world.connect(), await world.connect()
    first = await a.acquire("a", TTL_S)
    assert first is not None
    await world.advance(TTL_S * 1.5)
    second = await b.acquire("b", TTL_S)
    assert second is not None and second.holder == "b" and second.epoch == first.epoch + 1
    assert await a.renew("a", first.epoch, TTL_S) is False
    assert await a.acquire("a", TTL_S) is None


async def test_renew_keeps_the_lease_beyond_its_first_ttl(world: World) -> None:
    """Renewing within the ttl keeps others out for another ttl."""
    a, b = await world.connect(), await world.connect()
    lease = await a.acquire("a", TTL_S)
    assert lease is not None
    for _ in range(3):
        await world.advance(TTL_S * 0.6)
        assert await a.renew("a", lease.epoch, TTL_S) is True
        assert await b.acquire("b", TTL_S) is None


async def test_renew_with_a_wrong_holder_or_epoch_fails(world: World) -> None:
    """Only the holder at its epoch renews."""
    a = await world.connect()
    lease = await a.acquire("a", TTL_S)
    assert lease is not None
    assert await a.renew("b", lease.epoch, TTL_S) is False
    assert await a.renew("a", lease.epoch + 1, TTL_S) is False
    assert await a.renew("a", lease.epoch, TTL_S) is True


async def test_release_frees_the_lease_at_once(world: World) -> None:
    """A released lease is free at once (no wait for the ttl), to a larger epoch."""
    a, b = await world.connect(), await world.connect()
    first = await a.acquire("a", TTL_S)
    assert first is not None
    await a.release("a", first.epoch)
    assert await b.current() is None
    second = await b.acquire("b", TTL_S)
    assert second is not None and second.epoch > first.epoch


async def test_release_by_a_former_holder_changes_nothing(world: World) -> None:
    """A stale release (old epoch) leaves the new holder's lease alone."""
    a, b = await world.connect(), await world.connect()
    first = await a.acquire("a", TTL_S)
    assert first is not None
    await world.advance(TTL_S * 1.5)
    second = await b.acquire("b", TTL_S)
    assert second is not None
    await a.release("a", first.epoch)
    now = await a.current()
    assert now is not None and (now.holder, now.epoch) == ("b", second.epoch)


# ----- fencing -----

async def test_fenced_writes_pass_while_the_epoch_holds(world: World) -> None:
    """Writes through fenced(epoch) are stored while that epoch is the lease's."""
    a = await world.connect()
    lease = await a.acquire("a", TTL_S)
    assert lease is not None
    fenced: JobStore = a.fenced(lease.epoch)
    job, created = await fenced.create_or_get(make_job(1))
    assert created
    tr = machine.apply(job, Event.submit_started(), job.updated_at + 1)
    await fenced.apply(tr.before, tr.job, tr.reason)
    await fenced.update_job(tr.job.evolve(next_action_at=5.0))
    stored = await fenced.get(job.id)
    assert stored is not None and stored.state is LocalState.SUBMITTING
    assert stored.next_action_at == 5.0


async def test_stale_epoch_writes_raise_fenced_and_write_nothing(world: World) -> None:
    """Once another holder took the lease, every write of the old epoch raises Fenced (with
    both epochs) and changes nothing: no row, no event, no new job."""
    a, b = await world.connect(), await world.connect()
    first = await a.acquire("a", TTL_S)
    assert first is not None
    old: JobStore = a.fenced(first.epoch)
    job, _ = await old.create_or_get(make_job(1))
    await world.advance(TTL_S * 1.5)
    second = await b.acquire("b", TTL_S)
    assert second is not None
    tr = machine.apply(job, Event.submit_started(), job.updated_at + 1)
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: old.apply(tr.before, tr.job, tr.reason),
        lambda: old.update_job(job.evolve(next_action_at=99.0)),
        lambda: old.create_or_get(make_job(2)),
    ]
    for attempt in attempts:
        with pytest.raises(Fenced) as caught:
            await attempt()
        assert (caught.value.epoch, caught.value.current) == (first.epoch, second.epoch)
    assert await b.get(job.id) == job
    assert [e.to_state for e in await b.history(job.id)] == [LocalState.QUEUED]
    assert await b.get(make_job(2).id) is None
    # Reads still work through the stale view, and the new epoch writes.
    assert await old.get(job.id) == job
    await b.fenced(second.epoch).apply(tr.before, tr.job, tr.reason)


# ----- the change feed -----

async def test_feed_tells_every_write_to_every_subscriber(world: World) -> None:
    """Creates, transitions and updates by one connection reach the feeds of the others, in
    order, each to every subscriber."""
    a, b, c = await world.connect(), await world.connect(), await world.connect()
    assert isinstance(b, ChangeFeed)
    feed_b, feed_c = b.changes(), c.changes()
    job, _ = await a.create_or_get(make_job(1))
    tr = machine.apply(job, Event.cancel_requested(), job.updated_at + 1)
    other, _ = await a.create_or_get(make_job(2))
    await a.apply(tr.before, tr.job, tr.reason)
    await a.update_job(other.evolve(next_action_at=3.0))
    for feed in (feed_b, feed_c):
        assert [await _next(feed) for _ in range(4)] == [job.id, other.id, job.id, other.id]


async def test_feed_yields_a_star_after_a_gap(world: World) -> None:
    """After a gap (a lost connection) a feed yields "*" and then goes on."""
    if world.inject_gap is None:
        pytest.skip("this store cannot make a gap on demand")
    a, b = await world.connect(), await world.connect()
    feed = b.changes()
    world.inject_gap()
    assert await _next(feed) == GAP
    job, _ = await a.create_or_get(make_job(1))
    assert await _next(feed) == job.id


async def test_connections_share_jobs(world: World) -> None:
    """A job created through one connection is read, and its request id found, on another."""
    a, b = await world.connect(), await world.connect()
    job, _ = await a.create_or_get(make_job(1, request_id="r1"))
    assert await b.get(job.id) == job
    again, created = await b.create_or_get(make_job(9, request_id="r1"))
    assert not created and again == job


# ----- which stores lead -----

async def test_only_shared_stores_implement_leases(tmp_path: Path) -> None:
    """The app runs the leadership service where the store is Leases: memory yes, SQLite no."""
    sqlite = await Store.open(tmp_path / "tuningd.db")
    try:
        assert not isinstance(sqlite, Leases) and not isinstance(sqlite, ChangeFeed)
    finally:
        await sqlite.close()
    memory = await MemoryStore.open()
    assert isinstance(memory, Leases) and isinstance(memory, ChangeFeed)
