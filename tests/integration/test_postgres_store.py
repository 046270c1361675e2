"""What only the PostgreSQL store has: its failures as StoreError (503) without the password, its
migrations' bookkeeping, and a second daemon's writes seen at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.integration.store_jobs import make_job
from tuningd.adapters.migrations import LATEST, MIGRATIONS
from tuningd.adapters.postgres import PostgresStore
from tuningd.core import errors
from tuningd.core.model import LocalState

SECRET = "hunter2-not-shown"


def _with_password(url: str) -> str:
    return url.replace("postgresql://tuningd@", f"postgresql://tuningd:{SECRET}@", 1)


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    """A PostgreSQL store on a fresh database, opened with a password in its URL."""
    s = await PostgresStore.open(_with_password(pg_url))
    try:
        yield s
    finally:
        await s.close()


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_migrations_are_recorded_once_with_their_intent(store: PostgresStore,
                                                              pg_url: str) -> None:
    """A new database gets every migration once, with its intent; reopening runs none."""
    assert store.migrated == (0, LATEST)
    again = await PostgresStore.open(pg_url)
    try:
        assert again.migrated == (LATEST, LATEST)
    finally:
        await again.close()
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch("SELECT number, intent FROM schema_migrations ORDER BY number")
    finally:
        await conn.close()
    assert [(r["number"], r["intent"]) for r in rows] == [(m.number, m.intent)
                                                          for m in MIGRATIONS]


async def test_newer_schema_is_refused(pg_url: str) -> None:
    """A database migrated by a newer tuningd is left alone, with a plain message."""
    await (await PostgresStore.open(pg_url)).close()
    await _admin(pg_url, f"INSERT INTO schema_migrations (number, intent) "
                         f"VALUES ({LATEST + 1}, 'from the future')")
    with pytest.raises(errors.FailedPrecondition, match="newer than this tuningd supports"):
        await PostgresStore.open(pg_url)


async def test_unreachable_database_names_it_without_the_password() -> None:
    """A database that cannot be reached fails open() with its URL, the password as ***."""
    url = f"postgresql://tuningd:{SECRET}@127.0.0.1:1/tuningd"
    with pytest.raises(errors.FailedPrecondition) as info:
        await PostgresStore.open(url)
    assert "postgresql://tuningd:***@127.0.0.1:1/tuningd" in info.value.message
    assert SECRET not in info.value.message


async def test_failed_writes_and_reads_are_store_errors(store: PostgresStore,
                                                        pg_url: str) -> None:
    """A statement PostgreSQL refuses is a StoreError (503) saying reading or writing, without
    the password; the job is left as it was; /readyz's check turns False."""
    job = make_job()
    await store.insert_job(job)
    await _admin(pg_url, "ALTER TABLE job_events RENAME TO job_events_gone; "
                         "ALTER TABLE health RENAME TO health_gone")
    moved = job.evolve(state=LocalState.SUBMITTING, updated_at=job.updated_at + 1)
    with pytest.raises(errors.StoreError) as wrote:
        await store.apply(job, moved, "submit")
    assert wrote.value.writing and wrote.value.message.startswith(
        "the job store cannot be written: PostgreSQL error 42P01")
    assert SECRET not in wrote.value.message
    with pytest.raises(errors.StoreError) as read:
        await store.history(job.id)
    assert not read.value.writing
    assert await store.get(job.id) == job
    assert await store.check_writable() is False


async def test_a_second_daemons_writes_are_read_at_once(store: PostgresStore,
                                                        pg_url: str) -> None:
    """What one store handle commits, another on the same database reads and pages at once."""
    other = await PostgresStore.open(pg_url)
    try:
        created, fresh = await other.create_or_get(make_job(3, request_id="r"))
        assert fresh
        assert await store.get(created.id) == created
        assert await store.create_or_get(make_job(4, request_id="r")) == (created, False)
        assert [j.id for j in await store.list_jobs()] == [created.id]
    finally:
        await other.close()


async def test_closed_store_refuses_leases_too(store: PostgresStore) -> None:
    """After close() the lease calls are StoreError like every other call."""
    await store.close()
    with pytest.raises(errors.StoreError):
        await store.acquire("a", 10.0)
    with pytest.raises(errors.StoreError):
        await store.get("x")
