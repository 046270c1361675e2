"""The in-memory store as several instances' connections to one shared state (MemoryBacking):
what the lease contract suite cannot show without moving the store's clock by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.store_jobs import make_job
from tuningd.adapters.memory import MemoryBacking, MemoryStore
from tuningd.adapters.sqlite.store import Store
from tuningd.core import errors, machine
from tuningd.core.machine import Event
from tuningd.ports import ChangeFeed, Leases

TTL_S = 10.0


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def _next(feed: object) -> str:
    return await asyncio.wait_for(anext(feed), timeout=5.0)  # type: ignore[call-overload]


async def test_renewing_keeps_the_lease_past_its_first_ttl() -> None:
    """A holder renewing within each ttl keeps the lease for many ttls; once it stops, the
    lease passes after one ttl by the store's clock, not before."""
    clock = _Clock()
    backing = MemoryBacking(clock)
    a, b = backing.connect(), backing.connect()
    lease = await a.acquire("a", TTL_S)
    assert lease is not None
    for _ in range(5):
        clock.t += TTL_S * 0.6
        assert await a.renew("a", lease.epoch, TTL_S) is True
        assert await b.acquire("b", TTL_S) is None
    clock.t += TTL_S * 0.99
    assert await b.acquire("b", TTL_S) is None
    clock.t += TTL_S * 0.02
    taken = await b.acquire("b", TTL_S)
    assert taken is not None and taken.epoch == lease.epoch + 1
    current = await a.current()
    assert current is not None and current.remaining_s == TTL_S


async def test_every_subscriber_gets_every_write() -> None:
    """Two subscribers on two connections both get each write of a third, in order."""
    backing = MemoryBacking()
    a, b, c = backing.connect(), backing.connect(), backing.connect()
    feeds = [b.changes(), c.changes()]
    job, _ = await a.create_or_get(make_job(1))
    other, _ = await a.create_or_get(make_job(2))
    tr = machine.apply(job, Event.cancel_requested(), job.updated_at + 1)
    await a.apply(tr.before, tr.job, tr.reason)
    for feed in feeds:
        assert [await _next(feed) for _ in range(3)] == [job.id, other.id, job.id]


async def test_connections_share_jobs_and_request_ids() -> None:
    """A job created on one connection is read, and its requestId found, on another."""
    backing = MemoryBacking()
    a, b = backing.connect(), backing.connect()
    job, _ = await a.create_or_get(make_job(1, request_id="r1"))
    assert await b.get(job.id) == job
    again, created = await b.create_or_get(make_job(9, request_id="r1"))
    assert not created and again == job


async def test_a_closed_connection_takes_no_lease_call() -> None:
    """A crashed instance's connection (closed) can neither renew nor release."""
    backing = MemoryBacking()
    a, b = backing.connect(), backing.connect()
    lease = await a.acquire("a", TTL_S)
    assert lease is not None
    await a.close()
    with pytest.raises(errors.StoreError):
        await a.renew("a", lease.epoch, TTL_S)
    with pytest.raises(errors.StoreError):
        await a.release("a", lease.epoch)
    held = await b.current()
    assert held is not None and held.holder == "a"


async def test_only_shared_stores_implement_leases(tmp_path: Path) -> None:
    """The app runs the leadership service where the store has leases and a feed: memory and
    PostgreSQL do, the SQLite file (one daemon) does not."""
    sqlite = await Store.open(tmp_path / "tuningd.db")
    try:
        assert not isinstance(sqlite, Leases) and not isinstance(sqlite, ChangeFeed)
    finally:
        await sqlite.close()
    memory = await MemoryStore.open()
    assert isinstance(memory, Leases) and isinstance(memory, ChangeFeed)
