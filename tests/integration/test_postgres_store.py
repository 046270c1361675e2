"""What only the PostgreSQL store has: its failures as StoreError (503) without the password, its
migrations' bookkeeping, and a second daemon's writes seen at once."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.integration.store_jobs import insert_job, make_job
from tuningd.adapters.migrations import LATEST, MIGRATIONS
from tuningd.adapters.postgres import PostgresStore
from tuningd.core import errors
from tuningd.core.model import LocalState
from tuningd.ports import Fenced

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
    the password; the job is left as it was."""
    job = make_job()
    await insert_job(store, job)
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


async def test_readiness_check_writes_nothing_and_sees_a_read_only_database(pg_url: str) -> None:
    """check_writable() commits nothing (health.writes stays), is False on a database whose
    sessions are read-only (as on a standby server) and True again once they are not; a pooled
    session the server ended on the way is a False, not an asyncpg error."""
    async def writes() -> int:
        conn = await asyncpg.connect(pg_url)
        try:
            return int(await conn.fetchval("SELECT writes FROM health WHERE id = 1"))
        finally:
            await conn.close()

    database = urllib.parse.urlsplit(pg_url).path.lstrip("/")
    drop_sessions = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    async with await PostgresStore.open(pg_url) as store:
        before = await writes()
        assert await store.check_writable() is True
        assert await writes() == before
        # New sessions only see the setting: end the pool's, which it then replaces.
        await _admin(pg_url, f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        await _admin(pg_url, drop_sessions)
        assert await store.check_writable() in (True, False)  # may meet an ended session
        assert await store.check_writable() is False
        admin = await asyncpg.connect(pg_url)  # a session of its own may write again
        try:
            await admin.execute("SET default_transaction_read_only = off")
            await admin.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
            await admin.execute(drop_sessions)
        finally:
            await admin.close()
        assert await store.check_writable() in (True, False)
        assert await store.check_writable() is True


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


async def test_a_write_racing_a_takeover_is_fenced(store: PostgresStore, pg_url: str) -> None:
    """A fenced write that starts while a takeover's transaction holds the lease row waits for
    it, then sees the new epoch: Fenced, and nothing written."""
    lease = await store.acquire("a", 30.0)
    assert lease is not None
    job = make_job()
    await insert_job(store, job)
    taker = await asyncpg.connect(pg_url)
    try:
        takeover = taker.transaction()
        await takeover.start()
        await taker.execute("UPDATE lease SET holder = 'b', epoch = epoch + 1 "
                            "WHERE name = 'engine'")
        moved = job.evolve(state=LocalState.SUBMITTING, updated_at=job.updated_at + 1)
        write = asyncio.ensure_future(store.fenced(lease.epoch).apply(job, moved, "submit"))
        # No event tells that the write waits on the row lock: the server's view is polled.
        for _ in range(500):
            waiting = await taker.fetchval(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")
            if waiting or write.done():
                break
            await asyncio.sleep(0.01)
        assert not write.done(), "the fenced write did not wait for the takeover"
        await takeover.commit()
        with pytest.raises(Fenced):
            await write
    finally:
        await taker.close()
    assert await store.get(job.id) == job
    assert len(await store.history(job.id)) == 1


async def test_nul_in_free_text_is_stored_as_a_replacement_character(
        store: PostgresStore) -> None:
    """PostgreSQL text cannot hold U+0000: a NUL in a display name, an error message or a note
    is stored as U+FFFD (not a 503), while the spec's JSON keeps its escaped \\u0000."""
    job = make_job(display_name="a\x00b", spec_json='{"tunedModelDisplayName": "a\\u0000b"}')
    await insert_job(store, job)
    failed = job.evolve(state=LocalState.FAILED, updated_at=job.updated_at + 1,
                        error_message="remote said \x00")
    await store.apply(job, failed, "failed", notes=("note \x00",))
    got = await store.get(job.id)
    assert got is not None
    assert (got.display_name, got.error_message) == ("a\ufffdb", "remote said \ufffd")
    assert got.spec_json == job.spec_json
    assert [e.reason for e in await store.history(job.id)][1] == "note \ufffd"


async def test_sessions_end_a_stale_transaction_unless_the_url_says_otherwise(
        pg_url: str) -> None:
    """The store's sessions carry idle_in_transaction_session_timeout (so a frozen daemon's open
    transaction cannot hold the lease row); a value in the URL wins."""
    async with await PostgresStore.open(pg_url, stale_transaction_s=2.5) as store:
        rows = await store._read("SHOW idle_in_transaction_session_timeout")
        assert rows[0][0] == "2500ms"
    own = f"{pg_url}{'&' if '?' in pg_url else '?'}idle_in_transaction_session_timeout=7000"
    async with await PostgresStore.open(own) as store:
        rows = await store._read("SHOW idle_in_transaction_session_timeout")
        assert rows[0][0] == "7s"


async def test_migration_6_adds_an_empty_last_error(pg_url: str) -> None:
    """A database at schema 5 with a job gains the last-error columns: the job reads back with
    none recorded, and a last error written after is read back."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CREATE TABLE schema_migrations (number INTEGER PRIMARY KEY, "
                           "intent TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL "
                           "DEFAULT clock_timestamp())")
        for migration in MIGRATIONS[:5]:
            await conn.execute(migration.postgres)
            await conn.execute("INSERT INTO schema_migrations (number, intent) VALUES ($1, $2)",
                               migration.number, migration.intent)
        await conn.execute("INSERT INTO jobs (id, project, location, spec_json, base_model, "
                           "state, created_at, updated_at) VALUES ('job000001', 'p1', "
                           "'us-central1', '{\"baseModel\": \"gemini-2.0-flash-001\"}', "
                           "'gemini-2.0-flash-001', 'queued', 1700000001, 1700000001)")
    finally:
        await conn.close()
    s = await PostgresStore.open(pg_url)
    try:
        assert s.migrated == (5, LATEST) and LATEST == 6
        got = await s.get("job000001")
        assert got == make_job() and got is not None and got.last_error_code is None
        failed = got.evolve(last_error_code=16, last_error_message="no credentials",
                            last_error_at=1_700_000_005.5)
        await s.update_job(failed)
        assert await s.get("job000001") == failed
    finally:
        await s.close()
