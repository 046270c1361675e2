"""The Leases, Fenced and ChangeFeed contract (tuningd.ports) of stores several daemons share:
one holder at a time with a growing epoch, fenced writes refused after a takeover with nothing
written, and the ids of every writer's jobs delivered as they commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.store_jobs import make_job
from tuningd.core.model import LocalState
from tuningd.ports import ChangeFeed, Fenced, JobStore, Leases

WAIT_S = 10.0


@dataclass
class Shared:
    """One shared store: `open()` is another daemon's handle on it; `cut_feed()` breaks every
    change-feed connection (None where a store has no connection to lose)."""

    open: Callable[[], Awaitable[Any]]
    cut_feed: Callable[[], Awaitable[None]] | None = None


async def _feed_ready(store: Any) -> None:
    """Wait until the store's feed listens, where that takes a connection (PostgreSQL)."""
    await asyncio.wait_for(store.listening(), WAIT_S)


async def _postgres(request: pytest.FixtureRequest, stack: AsyncExitStack) -> Shared:
    """Each open() is another daemon's PostgresStore on one fresh database."""
    import asyncpg

    from tuningd.adapters.postgres import PostgresStore

    url: str = request.getfixturevalue("pg_url")

    async def open_store() -> PostgresStore:
        store = await PostgresStore.open(url)
        stack.push_async_callback(store.close)
        return store

    async def cut_feed() -> None:
        admin = await asyncpg.connect(url)
        try:
            killed = await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN %'")
            assert killed, "no listening connection to cut"
        finally:
            await admin.close()

    return Shared(open_store, cut_feed)


async def _memory(request: pytest.FixtureRequest, stack: AsyncExitStack) -> Shared:
    """Each open() is another daemon's connection to one in-memory backing."""
    from tuningd.adapters.memory import MemoryBacking

    backing = MemoryBacking()

    async def open_store() -> Any:
        store = backing.connect()
        stack.push_async_callback(store.close)
        return store

    async def cut_feed() -> None:
        backing.inject_gap()

    return Shared(open_store, cut_feed)


# Each kind of shared store: another kind is one entry (a function like _postgres).
KINDS: dict[str, Callable[[pytest.FixtureRequest, AsyncExitStack], Awaitable[Shared]]] = {
    "memory": _memory,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(KINDS))
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[Shared]:
    """Each kind of store several daemons can share, fresh and empty."""
    async with AsyncExitStack() as stack:
        yield await KINDS[request.param](request, stack)


async def _next(changes: AsyncIterator[str]) -> str:
    return await asyncio.wait_for(anext(changes), WAIT_S)


# ----- the lease -----

async def test_one_holder_at_a_time(shared: Shared) -> None:
    """A free lease goes to the first asker; others get None while it runs; the holder renews."""
    store = await shared.open()
    assert isinstance(store, Leases) and isinstance(store, ChangeFeed)
    assert await store.current() is None
    first = await store.acquire("a", 30.0)
    assert first is not None and first.holder == "a" and first.epoch >= 1
    assert 0 < first.remaining_s <= 30.0
    other = await shared.open()
    assert await other.acquire("b", 30.0) is None
    again = await store.acquire("a", 60.0)
    assert again is not None and again.epoch == first.epoch and again.remaining_s > 30.0
    seen = await other.current()
    assert seen is not None and (seen.holder, seen.epoch) == ("a", first.epoch)


async def test_concurrent_acquires_elect_one(shared: Shared) -> None:
    """Many instances asking at once: exactly one gets the lease."""
    stores = [await shared.open() for _ in range(5)]
    got = await asyncio.gather(*(s.acquire(f"i{n}", 30.0) for n, s in enumerate(stores)))
    winners = [lease for lease in got if lease is not None]
    assert len(winners) == 1


async def test_renew_only_by_the_holder_at_its_epoch(shared: Shared) -> None:
    """renew() is True for the holder at its epoch, False for anyone or any epoch else."""
    store = await shared.open()
    lease = await store.acquire("a", 30.0)
    assert lease is not None
    assert await store.renew("a", lease.epoch, 60.0) is True
    current = await store.current()
    assert current is not None and current.remaining_s > 30.0
    assert await store.renew("b", lease.epoch, 60.0) is False
    assert await store.renew("a", lease.epoch + 1, 60.0) is False


async def test_expired_lease_goes_to_the_next_with_a_larger_epoch(shared: Shared) -> None:
    """A lease not renewed within its ttl is taken by the next acquire, at a larger epoch,
    and the former holder can no longer renew it."""
    store, other = await shared.open(), await shared.open()
    old = await store.acquire("a", 0.0)  # a ttl of 0: over as soon as it is taken
    assert old is not None
    new = await other.acquire("b", 30.0)
    assert new is not None and new.holder == "b" and new.epoch > old.epoch
    assert await store.renew("a", old.epoch, 30.0) is False
    assert await store.acquire("a", 30.0) is None


async def test_release_frees_the_lease_and_the_epoch_still_grows(shared: Shared) -> None:
    """release() frees the lease at once; a stale release changes nothing; epochs never repeat."""
    store, other = await shared.open(), await shared.open()
    first = await store.acquire("a", 30.0)
    assert first is not None
    await store.release("a", first.epoch + 1)  # not the holder's epoch: ignored
    assert (await store.current()) is not None
    await store.release("a", first.epoch)
    assert await store.current() is None
    second = await other.acquire("b", 30.0)
    assert second is not None and second.epoch > first.epoch
    await other.release("b", second.epoch)
    third = await store.acquire("a", 30.0)
    assert third is not None and third.epoch > second.epoch


# ----- fencing -----

async def test_fenced_writes_pass_while_the_epoch_holds(shared: Shared) -> None:
    """Through fenced(epoch) the holder writes and reads like through the store itself."""
    store = await shared.open()
    lease = await store.acquire("a", 30.0)
    assert lease is not None
    fenced: JobStore = store.fenced(lease.epoch)
    job = make_job()
    assert await fenced.create_or_get(job) == (job, True)
    moved = job.evolve(state=LocalState.SUBMITTING, updated_at=job.updated_at + 1)
    await fenced.apply(job, moved, "submit")
    await fenced.update_job(moved.evolve(next_action_at=5.0))
    assert await store.get(job.id) == moved.evolve(next_action_at=5.0)
    assert await fenced.get(job.id) == moved.evolve(next_action_at=5.0)
    await fenced.close()  # a view: the store stays open
    assert await store.check_writable() is True


async def test_fenced_writes_refused_after_a_takeover_and_nothing_written(shared: Shared) -> None:
    """Once another instance took the lease, every write of the old epoch raises Fenced and
    changes nothing, while the new holder's writes pass."""
    old_store, new_store = await shared.open(), await shared.open()
    old = await old_store.acquire("a", 0.0)
    assert old is not None
    stale: JobStore = old_store.fenced(old.epoch)
    job = make_job()
    await stale.create_or_get(job)
    new = await new_store.acquire("b", 30.0)
    assert new is not None
    moved = job.evolve(state=LocalState.SUBMITTING, updated_at=job.updated_at + 1)
    with pytest.raises(Fenced) as refused:
        await stale.apply(job, moved, "submit")
    assert (refused.value.epoch, refused.value.current) == (old.epoch, new.epoch)
    with pytest.raises(Fenced):
        await stale.update_job(job.evolve(next_action_at=9.0))
    with pytest.raises(Fenced):
        await stale.create_or_get(make_job(2))
    assert await new_store.get(job.id) == job
    assert len(await new_store.history(job.id)) == 1
    assert await new_store.get(make_job(2).id) is None
    current: JobStore = new_store.fenced(new.epoch)
    await current.apply(job, moved, "submit")
    assert await old_store.get(job.id) == moved


# ----- the change feed -----

async def test_feed_delivers_ids_of_other_instances_writes(shared: Shared) -> None:
    """Creates, transitions and updates by another instance reach the feed as job ids."""
    listener, writer = await shared.open(), await shared.open()
    changes = listener.changes()
    pending = asyncio.ensure_future(_next(changes))
    await _feed_ready(listener)
    job = make_job(7)
    await writer.create_or_get(job)
    assert await pending == job.id
    moved = job.evolve(state=LocalState.SUBMITTING, updated_at=job.updated_at + 1)
    await writer.apply(job, moved, "submit")
    assert await _next(changes) == job.id
    await writer.update_job(moved.evolve(next_action_at=3.0))
    assert await _next(changes) == job.id
    await changes.aclose()


async def test_feed_says_everything_after_losing_its_connection(shared: Shared) -> None:
    """After its connection is cut the feed yields "*" (reread all), then ids again."""
    if shared.cut_feed is None:
        pytest.skip("this store's feed has no connection to lose")
    listener, writer = await shared.open(), await shared.open()
    changes = listener.changes()
    pending = asyncio.ensure_future(_next(changes))
    await _feed_ready(listener)
    await writer.create_or_get(make_job(1))
    assert await pending == make_job(1).id
    pending = asyncio.ensure_future(_next(changes))
    await shared.cut_feed()
    assert await pending == "*"
    await _feed_ready(listener)
    await writer.create_or_get(make_job(2))
    assert await _next(changes) == make_job(2).id
    await changes.aclose()
