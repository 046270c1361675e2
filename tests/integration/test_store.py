"""Integration tests of tuningd.store against real SQLite files in a temp directory."""

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

from tuningd import errors
from tuningd.model import Job, LocalState, Outcome
from tuningd.store import (
    JOB_COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    StaleWrite,
    Store,
    _job_to_row,
    page_key,
)

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def make_job(n: int = 1, **changes: object) -> Job:
    base = Job(
        id=f"job{n:06d}",
        project="p1",
        location="us-central1",
        spec_json='{"baseModel": "gemini-2.0-flash-001"}',
        base_model="gemini-2.0-flash-001",
        state=LocalState.QUEUED,
        created_at=1_700_000_000.0 + n,
        updated_at=1_700_000_000.0 + n,
    )
    return base.evolve(**changes)


def full_job() -> Job:
    """A job where every field differs from its default, with awkward values."""
    return Job(
        id="j-full",
        project="proj-x",
        location="europe-west4",
        spec_json='{"labels": {"a": "b"}, "x": "\\u00e9\\u4e2d"}',
        base_model="gemini-2.5-pro",
        state=LocalState.CANCELLING,
        created_at=1_700_000_000.123456789,
        updated_at=0.1 + 0.2,
        priority=-7,
        request_id="req-é-1",
        display_name="My \"job\"\n",
        attempts=3,
        remote_name="projects/123/locations/europe-west4/tuningJobs/987",
        remote_state="JOB_STATE_RUNNING",
        remote_substate="TUNING_JOB_STATE_TUNING",
        remote_json='{"name": "projects/123/locations/europe-west4/tuningJobs/987"}',
        cancel_requested=True,
        cancel_sent_at=1e-300,
        next_action_at=1.7976931348623157e308,
        poll_interval_s=2.5,
        retry_count=2**40,
        submit_started_at=1_700_000_001.5,
        submitted_at=1_700_000_002.25,
        ended_at=1_700_000_003.0,
        error_code=9,
        error_message="FAILED_PRECONDITION: ünïcode",
        outcome=Outcome.COMPLETED_DESPITE_CANCEL,
        remote_update_time="2024-05-01T10:00:00.123456Z",
        attempt_ended_at=1_700_000_001.75,
        absent_checks=2,
        missing_checks=1,
        api_version="v1beta1",
    )


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
               "from tuningd.store import Store\nfrom tuningd import errors\n")
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


async def test_round_trip_every_field(store: Store) -> None:
    """Every Job field comes back exactly: floats bit for bit, None, bools and enums typed."""
    full, plain = full_job(), make_job()
    await store.insert_job(full, "accepted")
    await store.insert_job(plain, "accepted")
    got_full, got_plain = await store.get(full.id), await store.get(plain.id)
    assert got_full == full and got_plain == plain
    assert got_full is not None and got_plain is not None
    for f in fields(Job):
        assert type(getattr(got_full, f.name)) is type(getattr(full, f.name)), f.name
    assert isinstance(got_full.state, LocalState)
    assert got_full.outcome is Outcome.COMPLETED_DESPITE_CANCEL
    assert got_full.cancel_requested is True and got_plain.cancel_requested is False
    assert got_plain.request_id is None and got_plain.ended_at is None
    assert await store.get("nope") is None


async def test_int_times_are_stored_as_floats(store: Store) -> None:
    """An int passed for a float field comes back as an equal float."""
    job = make_job(created_at=1_700_000_000, updated_at=5, next_action_at=7)
    await store.insert_job(job, "accepted")
    got = await store.get(job.id)
    assert got == job and got is not None and isinstance(got.next_action_at, float)


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    """Jobs and events written before close are all there after a reopen."""
    db = tmp_path / "tuningd.db"
    async with await Store.open(db) as s:
        job = make_job()
        await s.insert_job(job, "accepted")
        after = job.evolve(state=LocalState.SUBMITTING, attempts=1, updated_at=job.updated_at + 1)
        await s.apply(job, after, "submit", {"attempt": 1})
    async with await Store.open(db) as s:
        assert await s.get(job.id) == after
        assert [e.reason for e in await s.history(job.id)] == ["accepted", "submit"]


async def test_commit_survives_kill_9(tmp_path: Path) -> None:
    """A write that returned before the process was SIGKILLed is in the database afterwards."""
    db = tmp_path / "tuningd.db"
    child = run_child(
        "from tuningd.model import Job, LocalState\n"
        "async def main():\n"
        "    s = await Store.open(sys.argv[1])\n"
        "    job = Job(id='k1', project='p', location='l', spec_json='{}', base_model='m',\n"
        "              state=LocalState.QUEUED, created_at=1.0, updated_at=1.0)\n"
        "    await s.insert_job(job, 'accepted')\n"
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

async def test_insert_writes_first_event(store: Store) -> None:
    """insert_job stores the job and a None -> queued event at created_at."""
    job = make_job()
    assert await store.insert_job(job, "accepted") == job
    [event] = await store.history(job.id)
    assert (event.job_id, event.seq, event.from_state, event.to_state, event.reason) == (
        job.id, 1, None, LocalState.QUEUED, "accepted")
    assert event.at == job.created_at and dict(event.detail) == {}


async def test_apply_writes_row_and_event(store: Store) -> None:
    """apply() stores the new row and an event with detail; history is in order."""
    job = make_job()
    await store.insert_job(job, "accepted")
    steps = [
        (LocalState.SUBMITTING, "submit", {"attempt": 1}),
        (LocalState.PENDING, "created", {"name": "projects/1/locations/l/tuningJobs/2"}),
        (LocalState.RUNNING, "polled", None),
        (LocalState.SUCCEEDED, "polled", {"nested": {"list": [1, 2.5, None, True]}}),
    ]
    current = job
    for i, (state, reason, detail) in enumerate(steps, start=1):
        nxt = current.evolve(state=state, updated_at=job.updated_at + i)
        await store.apply(current, nxt, reason, detail)
        current = nxt
    assert await store.get(job.id) == current
    history = await store.history(job.id)
    assert [e.seq for e in history] == [1, 2, 3, 4, 5]
    assert [e.to_state for e in history] == [LocalState.QUEUED] + [s for s, _, _ in steps]
    assert [e.from_state for e in history] == [None, LocalState.QUEUED, LocalState.SUBMITTING,
                                               LocalState.PENDING, LocalState.RUNNING]
    assert [e.at for e in history] == [job.created_at] + [job.updated_at + i for i in range(1, 5)]
    assert dict(history[4].detail) == {"nested": {"list": [1, 2.5, None, True]}}
    assert dict(history[3].detail) == {}


async def test_apply_same_state_still_records_event(store: Store) -> None:
    """A transition that keeps the state (cancel intent while submitting) is still history."""
    job = make_job(state=LocalState.SUBMITTING)
    await store.insert_job(job, "accepted")
    after = job.evolve(cancel_requested=True, updated_at=job.updated_at + 1)
    await store.apply(job, after, "cancel_requested")
    history = await store.history(job.id)
    assert [(e.from_state, e.to_state, e.reason) for e in history][-1] == (
        LocalState.SUBMITTING, LocalState.SUBMITTING, "cancel_requested")


async def test_apply_with_stale_before_changes_nothing(store: Store) -> None:
    """apply() refuses a `before` that no longer matches the row and writes no event."""
    job = make_job()
    await store.insert_job(job, "accepted")
    moved = job.evolve(state=LocalState.SUBMITTING, updated_at=job.updated_at + 1)
    await store.apply(job, moved, "submit")
    with pytest.raises(StaleWrite):
        await store.apply(job, job.evolve(state=LocalState.CANCELLED), "cancel")
    with pytest.raises(StaleWrite):
        await store.apply(make_job(99), make_job(99, state=LocalState.FAILED), "x")
    assert await store.get(job.id) == moved
    assert len(await store.history(job.id)) == 2


async def test_apply_is_atomic_when_event_insert_fails(store: Store, tmp_path: Path) -> None:
    """If the event row cannot be written, the job row change is rolled back too."""
    job = make_job()
    await store.insert_job(job, "accepted")
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


async def test_unserializable_detail_writes_nothing(store: Store) -> None:
    """A detail that is not JSON is refused before anything is written."""
    job = make_job()
    await store.insert_job(job, "accepted")
    with pytest.raises(TypeError):
        await store.apply(job, job.evolve(state=LocalState.SUBMITTING), "x", {"bad": object()})
    assert await store.get(job.id) == job


async def test_update_job_has_no_event_and_keeps_state(store: Store) -> None:
    """update_job() stores bookkeeping fields without an event and refuses state changes."""
    job = make_job(state=LocalState.RUNNING)
    await store.insert_job(job, "accepted")
    polled = job.evolve(next_action_at=123.5, poll_interval_s=60.0, retry_count=1,
                        remote_json='{"state": "JOB_STATE_RUNNING"}')
    await store.update_job(polled)
    assert await store.get(job.id) == polled
    assert len(await store.history(job.id)) == 1
    with pytest.raises(StaleWrite):
        await store.update_job(polled.evolve(state=LocalState.SUCCEEDED))
    with pytest.raises(StaleWrite):
        await store.update_job(make_job(42))
    assert await store.get(job.id) == polled


async def test_duplicate_job_id_refused(store: Store) -> None:
    """Inserting a second job with an existing local id is AlreadyExists, not an overwrite."""
    job = make_job()
    await store.insert_job(job, "accepted")
    with pytest.raises(errors.AlreadyExists):
        await store.insert_job(job.evolve(display_name="other"), "accepted")
    assert await store.get(job.id) == job
    assert len(await store.history(job.id)) == 1


# ----- idempotent create -----

async def test_request_id_is_idempotent_per_project_and_location(store: Store) -> None:
    """A repeated request_id in the same project/location returns the first job, no new rows."""
    first = make_job(1, request_id="r1")
    again = make_job(2, request_id="r1", display_name="second try")
    other_location = make_job(3, request_id="r1", location="europe-west4")
    other_project = make_job(4, request_id="r1", project="p2")
    assert await store.create_or_get(first, "accepted") == (first, True)
    assert await store.create_or_get(again, "accepted") == (first, False)
    assert await store.insert_job(again, "accepted") == first
    assert await store.create_or_get(other_location, "accepted") == (other_location, True)
    assert await store.create_or_get(other_project, "accepted") == (other_project, True)
    assert await store.get(again.id) is None
    assert len(await store.history(first.id)) == 1
    assert await store.get_by_request_id("p1", "us-central1", "r1") == first
    assert await store.get_by_request_id("p1", "europe-west4", "r1") == other_location
    assert await store.get_by_request_id("p1", "us-central1", "r2") is None


async def test_concurrent_creates_with_same_request_id_make_one_job(store: Store) -> None:
    """Many coroutines racing the same request_id end with exactly one job."""
    results = await asyncio.gather(*(
        store.create_or_get(make_job(i, request_id="same"), "accepted") for i in range(20)))
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert sum((await store.count_by_state()).values()) == 1


# ----- queries -----

async def test_active_and_queued_and_count_by_state(store: Store) -> None:
    """active_and_queued() returns exactly the non-terminal jobs; count_by_state counts all."""
    states = [*LocalState, LocalState.QUEUED, LocalState.SUCCEEDED, LocalState.SUCCEEDED]
    for i, state in enumerate(states):
        await store.insert_job(make_job(i, state=state), "accepted")
    active = await store.active_and_queued()
    assert sorted(j.state for j in active) == sorted(s for s in states if not s.is_terminal)
    assert [j.created_at for j in active] == sorted(j.created_at for j in active)
    counts = await store.count_by_state()
    assert set(counts) == set(LocalState)
    assert counts[LocalState.QUEUED] == 2 and counts[LocalState.SUCCEEDED] == 3
    assert counts[LocalState.RUNNING] == 1 and sum(counts.values()) == len(states)


async def test_keyset_pagination(store: Store) -> None:
    """Pages walk all jobs newest first without gaps or repeats, ties broken by id."""
    jobs = [make_job(i, created_at=1000.0 + i // 3) for i in range(11)]  # groups of equal times
    jobs.append(make_job(50, project="other"))
    for job in jobs:
        await store.insert_job(job, "accepted")
    expected = sorted((j for j in jobs if j.project == "p1"),
                      key=lambda j: (j.created_at, j.id), reverse=True)
    seen: list[Job] = []
    key: str | None = None
    pages = 0
    while True:
        page, key = await store.list_page("p1", "us-central1", after_key=key, limit=4)
        seen.extend(page)
        pages += 1
        if key is None:
            break
    assert seen == expected and pages == 3
    manual = await store.list_jobs("p1", "us-central1", limit=4)
    assert manual == expected[:4]
    rest = await store.list_jobs("p1", "us-central1", after_key=page_key(manual[-1]), limit=100)
    assert rest == expected[4:]
    assert len(await store.list_jobs(limit=100)) == 12
    assert await store.list_jobs("p1", "europe-west4") == []


async def test_list_filters_by_state(store: Store) -> None:
    """A states filter returns only jobs in those states, still newest first."""
    for i, state in enumerate([LocalState.QUEUED, LocalState.RUNNING, LocalState.FAILED,
                               LocalState.RUNNING]):
        await store.insert_job(make_job(i, state=state), "accepted")
    got = await store.list_jobs("p1", "us-central1", states={LocalState.RUNNING})
    assert [j.id for j in got] == ["job000003", "job000001"]
    assert len(await store.list_jobs("p1", "us-central1", states=[])) == 4


async def test_bad_page_key_and_limit(store: Store) -> None:
    """A malformed page key or a limit below 1 is InvalidArgument."""
    with pytest.raises(errors.InvalidArgument):
        await store.list_jobs(after_key="garbage")
    with pytest.raises(errors.InvalidArgument):
        await store.list_jobs(after_key="abc|job1")
    with pytest.raises(errors.InvalidArgument):
        await store.list_jobs(limit=0)


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
        await s.insert_job(make_job(), "accepted")
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
        columns = [c for c in JOB_COLUMNS if c != "api_version"]
        values = {f.name: getattr(old, f.name) for f in fields(Job)}
        values["state"] = old.state.value
        values["cancel_requested"] = int(old.cancel_requested)
        raw.execute(f"INSERT INTO jobs ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})", [values[c] for c in columns])
    raw.close()
    async with await Store.open(db) as s:
        assert await s.get(old.id) == old and old.api_version is None
        await s.insert_job(make_job(2, api_version="v1beta1"), "accepted")
        assert (await s.get(make_job(2).id)).api_version == "v1beta1"  # type: ignore[union-attr]
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
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
        await s.insert_job(make_job(), "accepted")
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


# ----- group commit and filtered pages -----

async def test_concurrent_writes_share_commits_and_fail_alone(store: Store) -> None:
    """Writes waiting on a commit go into the next one together; a failing one changes nothing
    and does not fail the others, and every caller returns only after its commit."""
    await store.insert_job(make_job(1), "accepted")
    commits_before = store.commits
    jobs = [make_job(n) for n in range(2, 202)]
    results = await asyncio.gather(
        *(store.insert_job(j, "accepted") for j in jobs),
        store.insert_job(make_job(1), "accepted"),  # same id: AlreadyExists
        return_exceptions=True,
    )
    assert isinstance(results[-1], errors.AlreadyExists)
    assert results[:-1] == jobs
    assert store.commits - commits_before < len(jobs)
    for job in jobs:
        assert await store.get(job.id) == job
        assert len(await store.history(job.id)) == 1
    assert len(await store.history(make_job(1).id)) == 1


async def test_list_by_label_and_state_uses_pages(store: Store) -> None:
    """labels= and states= filters page newest first like the unfiltered list."""
    for n in range(1, 31):
        spec = '{"labels": {"team": "%s", "n": 1}}' % ("a" if n % 3 else "b")
        state = LocalState.FAILED if n % 2 else LocalState.QUEUED
        await store.insert_job(make_job(n, spec_json=spec, state=state), "accepted")
    want = [make_job(n).id for n in range(30, 0, -1) if n % 3]
    got: list[str] = []
    key = None
    while True:
        page, key = await store.list_page("p1", "us-central1", labels={"team": "a"},
                                          after_key=key, limit=7)
        got.extend(j.id for j in page)
        if key is None:
            break
    assert got == want
    both = await store.list_jobs("p1", "us-central1", states={LocalState.FAILED},
                                 labels={"team": "b"})
    assert [j.id for j in both] == [make_job(n).id for n in (27, 21, 15, 9, 3)]
    assert await store.list_jobs("p1", "us-central1", labels={"n": "1"}) == []
    assert len(await store.list_jobs(labels={"team": "b"})) == 10
