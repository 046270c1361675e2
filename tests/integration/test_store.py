"""Integration tests of tuningd.adapters.sqlite.store against real SQLite files in a temp directory.

What every store must do is in test_store_contract.py; these are SQLite's own behaviours."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

import pytest

from tests.integration.store_jobs import full_job, insert_job, make_job
from tuningd.adapters.sqlite.reads import IDS_FROM, IDS_IN_RANGE
from tuningd.adapters.sqlite.store import (
    JOB_COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    Store,
    _job_to_row,
    page_key,
)
from tuningd.core import errors
from tuningd.core.model import Job, LocalState

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "tuningd.db")
    try:
        yield s
    finally:
        await s.close()


def run_child(code: str, db: Path) -> subprocess.Popen[str]:
    """Start a Python child that has `db` (a path string) and the tuningd package available."""
    prelude = ("import asyncio, os, sys\n"
               "from tuningd.adapters.sqlite.store import Store\nfrom tuningd.core import errors\n")
    return subprocess.Popen(
        [sys.executable, "-c", prelude + code, str(db)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )


# ----- round trips -----

def test_full_job_really_sets_every_field() -> None:
    """The round-trip fixture leaves no Job field at its default, so every column is exercised."""
    job, default = full_job(), make_job()
    for f in fields(Job):
        if f.name not in ("id", "project", "location", "spec_json", "base_model", "state",
                          "created_at", "updated_at"):
            assert getattr(job, f.name) != f.default, f.name
    assert {f.name for f in fields(Job)} == set(JOB_COLUMNS)
    assert default.outcome is None


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    """Jobs and events written before close are all there after a reopen."""
    db = tmp_path / "tuningd.db"
    async with await Store.open(db) as s:
        job = make_job()
        await insert_job(s, job, "accepted")
        after = job.evolve(state=LocalState.SUBMITTING, attempts=1, updated_at=job.updated_at + 1)
        await s.apply(job, after, "submit", {"attempt": 1})
    async with await Store.open(db) as s:
        assert await s.get(job.id) == after
        assert [e.reason for e in await s.history(job.id)] == ["accepted", "submit"]


async def test_commit_survives_kill_9(tmp_path: Path) -> None:
    """A write that returned before the process was SIGKILLed is in the database afterwards."""
    db = tmp_path / "tuningd.db"
    child = run_child(
        "from tuningd.core.model import Job, LocalState\n"
        "async def main():\n"
        "    s = await Store.open(sys.argv[1])\n"
        "    job = Job(id='k1', project='p', location='l', spec_json='{}', base_model='m',\n"
        "              state=LocalState.QUEUED, created_at=1.0, updated_at=1.0)\n"
        "    await s.create_or_get(job, 'accepted')\n"
        "    os.kill(os.getpid(), 9)\n"
        "asyncio.run(main())\n",
        db,
    )
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    async with await Store.open(db) as s:
        got = await s.get("k1")
        assert got is not None and got.state is LocalState.QUEUED
        assert len(await s.history("k1")) == 1


# ----- transitions and events -----

async def test_apply_is_atomic_when_event_insert_fails(store: Store, tmp_path: Path) -> None:
    """If the event row cannot be written, the job row change is rolled back too."""
    job = make_job()
    await insert_job(store, job, "accepted")
    # A trigger installed by a second connection makes exactly the event insert fail.
    with sqlite3.connect(tmp_path / "tuningd.db") as other:
        other.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON job_events WHEN NEW.reason = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'boom'); END")
    other.close()
    after = job.evolve(state=LocalState.SUBMITTING, updated_at=job.updated_at + 1)
    with pytest.raises(errors.StoreError, match="cannot be written: boom") as caught:
        await store.apply(job, after, "boom")
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert await store.get(job.id) == job
    assert len(await store.history(job.id)) == 1
    # The connection is usable again: no transaction was left open.
    await store.apply(job, after, "submit")
    assert await store.get(job.id) == after


# ----- queries -----

async def test_queries_stay_fast_with_100k_jobs(tmp_path: Path) -> None:
    """With 100,000 jobs of history, pages, counts and the working set stay well under 100 ms."""
    db = tmp_path / "tuningd.db"
    async with await Store.open(db):
        pass
    # Rows are built from one template row: building 100k Job objects would dominate the test.
    template = list(_job_to_row(make_job(0)))
    at = {name: JOB_COLUMNS.index(name) for name in ("id", "state", "created_at", "updated_at")}
    rows = []
    for i in range(100_000):
        row = template.copy()
        row[at["id"]] = f"job{i:06d}"
        row[at["state"]] = "queued" if i % 1000 == 0 else "succeeded"
        row[at["created_at"]] = row[at["updated_at"]] = 1_700_000_000.0 + i
        rows.append(tuple(row))
    columns, marks = ", ".join(JOB_COLUMNS), ", ".join("?" * len(JOB_COLUMNS))
    with sqlite3.connect(db) as bulk:
        bulk.executemany(f"INSERT INTO jobs ({columns}) VALUES ({marks})", rows)
    bulk.close()
    async with await Store.open(db) as s:
        timings: dict[str, float] = {}

        async def timed(name: str, coro: Awaitable[T]) -> T:
            start = time.perf_counter()
            result = await coro
            timings[name] = time.perf_counter() - start
            return result

        first = await timed("first page", s.list_jobs("p1", "us-central1", limit=50))
        deep_key = page_key(make_job(500))
        deep = await timed("deep page", s.list_jobs("p1", "us-central1", after_key=deep_key))
        active = await timed("working set", s.active_and_queued())
        counts = await timed("counts", s.count_by_state())
        await timed("by request id", s.get_by_request_id("p1", "us-central1", "x"))
        await timed("one job", s.get("job050000"))
        assert len(first) == 50 and first[0].id == "job099999"
        assert deep[0].id == "job000499"
        assert len(active) == 100
        assert counts[LocalState.SUCCEEDED] == 99_900
        # count_by_state scans one small index; the rest touch O(page) rows.
        assert all(t < 0.1 for t in timings.values()), timings


async def test_id_prefix_reads_search_the_primary_key(tmp_path: Path) -> None:
    """The id-prefix queries are index searches of the primary key, never a scan (LIKE would
    scan): SQLite's plan for each says SEARCH on the jobs table's key."""
    db = tmp_path / "tuningd.db"
    async with await Store.open(db):
        pass
    with sqlite3.connect(db) as conn:
        for sql, params in ((IDS_IN_RANGE, ("ab", "ac", 5)), (IDS_FROM, ("ab", 5))):
            plan = " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "SEARCH jobs USING COVERING INDEX sqlite_autoindex_jobs_1 (id>?" in plan, plan
            assert "SCAN" not in plan, plan
    conn.close()


async def test_check_writable(tmp_path: Path) -> None:
    """check_writable() is True for an open store and False once it is closed."""
    s = await Store.open(tmp_path / "tuningd.db")
    assert await s.check_writable() is True
    assert await s.check_writable() is True
    await s.close()
    assert await s.check_writable() is False
    await s.close()  # idempotent


# ----- schema and migrations -----

async def test_migrations_from_empty_db_and_reopen(tmp_path: Path) -> None:
    """A new file gets the whole schema; reopening changes nothing and keeps data (an empty
    file is refused: see test_store_files.py)."""
    db = tmp_path / "tuningd.db"
    async with await Store.open(db) as s:
        await insert_job(s, make_job(), "accepted")
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    raw.close()
    assert {"jobs", "job_events"} <= tables
    assert {"jobs_state", "jobs_state_next_action", "jobs_request_id", "jobs_created"} <= indexes
    for _ in range(2):
        async with await Store.open(db) as s:
            assert await s.get(make_job().id) == make_job()
            assert len(await s.history(make_job().id)) == 1
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


async def test_migration_4_keeps_older_jobs_at_the_configured_version(tmp_path: Path) -> None:
    """A database of schema 3 gains api_version; its jobs read back with None (the configured
    default applies to them) and everything else unchanged."""
    db = tmp_path / "tuningd.db"
    old = make_job()
    with sqlite3.connect(db) as raw:
        for script in MIGRATIONS[:3]:
            raw.executescript(script)
        raw.execute("PRAGMA user_version = 3")
        columns = [c for c in JOB_COLUMNS if c != "api_version"
                   and not c.startswith("last_error_")]  # (migration 6's)
        values = {f.name: getattr(old, f.name) for f in fields(Job)}
        values["state"] = old.state.value
        values["cancel_requested"] = int(old.cancel_requested)
        raw.execute(f"INSERT INTO jobs ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})", [values[c] for c in columns])
    raw.close()
    async with await Store.open(db) as s:
        assert await s.get(old.id) == old and old.api_version is None
        await insert_job(s, make_job(2, api_version="v1beta1"), "accepted")
        assert (await s.get(make_job(2).id)).api_version == "v1beta1"  # type: ignore[union-attr]
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


async def test_migration_6_adds_an_empty_last_error(tmp_path: Path) -> None:
    """A database of schema 5 gains the last-error columns; its jobs read back with none
    recorded, and a new last error is stored and read back."""
    db = tmp_path / "tuningd.db"
    old = make_job()
    with sqlite3.connect(db) as raw:
        for script in MIGRATIONS[:5]:
            raw.executescript(script)
        raw.execute("PRAGMA user_version = 5")
        columns = [c for c in JOB_COLUMNS if not c.startswith("last_error_")]
        values = {f.name: getattr(old, f.name) for f in fields(Job)}
        values["state"] = old.state.value
        values["cancel_requested"] = int(old.cancel_requested)
        raw.execute(f"INSERT INTO jobs ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})", [values[c] for c in columns])
    raw.close()
    async with await Store.open(db) as s:
        got = await s.get(old.id)
        assert got == old and got is not None and got.last_error_code is None
        failed = got.evolve(last_error_code=16, last_error_message="no credentials",
                            last_error_at=1_700_000_005.5)
        await s.update_job(failed)
        assert await s.get(old.id) == failed
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    raw.close()


async def test_newer_schema_refused(tmp_path: Path) -> None:
    """A database written by a newer tuningd (higher user_version) is not touched."""
    db = tmp_path / "tuningd.db"
    with sqlite3.connect(db) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(errors.FailedPrecondition, match="newer"):
        await Store.open(db)
    # The daemon lock was released despite the failure.
    fd = os.open(f"{db}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert raw.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    raw.close()


async def test_missing_directory_is_clear(tmp_path: Path) -> None:
    """Opening a database in a directory that does not exist names that directory."""
    with pytest.raises(errors.FailedPrecondition, match="does not exist"):
        await Store.open(tmp_path / "nope" / "tuningd.db")


async def test_memory_store(tmp_path: Path) -> None:
    """':memory:' gives a working throwaway store without a lock file."""
    async with await Store.open(":memory:") as s:
        await insert_job(s, make_job(), "accepted")
        assert await s.get(make_job().id) == make_job()


# ----- one daemon per database -----

async def test_second_open_in_same_process_refused(tmp_path: Path) -> None:
    """A second Store on the same file, even in the same process, raises StoreLocked."""
    db = tmp_path / "tuningd.db"
    async with await Store.open(db):
        with pytest.raises(errors.StoreLocked) as info:
            await Store.open(db)
        message = str(info.value)
        assert "another tuningd" in message and str(db) in message and f"{db}.lock" in message
    async with await Store.open(db):  # released on close
        pass


async def test_second_open_from_other_process_refused(tmp_path: Path) -> None:
    """Another process cannot open a database this process holds."""
    db = tmp_path / "tuningd.db"
    async with await Store.open(db):
        child = run_child(
            "try:\n"
            "    asyncio.run(Store.open(sys.argv[1]))\n"
            "except errors.StoreLocked as exc:\n"
            "    print(exc)\n"
            "    sys.exit(3)\n",
            db,
        )
        out, err = child.communicate(timeout=30)
        assert child.returncode == 3, err
        assert f"another tuningd (pid {os.getpid()}) is already using {db}" in out


async def test_lock_released_when_holder_is_killed(tmp_path: Path) -> None:
    """When the holding process is SIGKILLed the kernel drops the lock and we can open."""
    db = tmp_path / "tuningd.db"
    child = run_child(
        "async def main():\n"
        "    s = await Store.open(sys.argv[1])\n"
        "    print('locked', flush=True)\n"
        "    await asyncio.to_thread(sys.stdin.read)\n"
        "asyncio.run(main())\n",
        db,
    )
    assert child.stdout is not None
    # Log lines (store.created) may come first.
    lines = iter(child.stdout.readline, "")
    assert any(line.strip() == "locked" for line in lines)
    with pytest.raises(errors.StoreLocked):
        await Store.open(db)
    child.kill()
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    async with await Store.open(db) as s:
        assert await s.check_writable()


# ----- group commit -----

async def test_concurrent_writes_share_commits_and_fail_alone(store: Store) -> None:
    """Writes waiting on a commit go into the next one together; a failing one changes nothing
    and does not fail the others, and every caller returns only after its commit."""
    await insert_job(store, make_job(1), "accepted")
    commits_before = store.commits
    jobs = [make_job(n) for n in range(2, 202)]
    results = await asyncio.gather(
        *(insert_job(store, j, "accepted") for j in jobs),
        insert_job(store, make_job(1), "accepted"),  # same id: AlreadyExists
        return_exceptions=True,
    )
    assert isinstance(results[-1], errors.AlreadyExists)
    assert results[:-1] == jobs
    assert store.commits - commits_before < len(jobs)
    for job in jobs:
        assert await store.get(job.id) == job
        assert len(await store.history(job.id)) == 1
    assert len(await store.history(make_job(1).id)) == 1


async def test_a_write_whose_caller_is_cancelled_is_still_committed(store: Store) -> None:
    """Cancelling a caller waiting for its commit (a shutdown) neither drops its write nor leaves
    a transaction open: the write is stored and the next writes go on."""
    job = make_job(1)
    waiting = asyncio.ensure_future(store.create_or_get(job, "accepted"))
    await asyncio.sleep(0)  # the write is queued and its caller waits for the commit
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # A later write is committed after the first one's transaction.
    assert await store.create_or_get(make_job(2), "accepted") == (make_job(2), True)
    assert await store.get(job.id) == job
    assert [e.reason for e in await store.history(job.id)] == ["accepted"]


