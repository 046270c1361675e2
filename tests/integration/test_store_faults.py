"""Real SQLite faults (disk full, read-only, closed connection): StoreError, and nothing stored."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from sqlite_faults import disk_full, disk_has_room, read_only

from tests.integration.store_jobs import insert_job
from tuningd.adapters.log import configure_logging
from tuningd.adapters.sqlite.store import Store, store_error
from tuningd.core import errors
from tuningd.core.model import Job, LocalState

FULL = "the job store cannot be written: database or disk is full"
READ_ONLY = "the job store cannot be written: the database is read-only"


def make_job(n: int, *, labels: dict[str, str] | None = None, description: str = "") -> Job:
    spec: dict[str, object] = {"baseModel": "gemini-2.5-flash", "labels": labels or {}}
    if description:
        spec["description"] = description
    return Job(id=f"job{n:04d}", project="my-proj", location="us-central1",
               spec_json=json.dumps(spec), base_model="gemini-2.5-flash",
               state=LocalState.QUEUED, created_at=1000.0 + n, updated_at=1000.0 + n)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "tuningd.db") as s:
        yield s


async def _nothing_of(store: Store, *jobs: Job, labelled: list[str] | None = None) -> None:
    """None of `jobs` is stored (row, events, labels); the labelled jobs are exactly `labelled`."""
    for job in jobs:
        assert await store.get(job.id) is None
        assert await store.history(job.id) == []
    found = await store.list_jobs("my-proj", "us-central1", labels={"team": "nlp"})
    assert [j.id for j in found] == (labelled or [])


def _check_store_error(exc: BaseException, message: str, name: str, code: int) -> None:
    assert isinstance(exc, errors.StoreError)
    assert isinstance(exc, errors.Unavailable)
    assert (exc.http_status, exc.status, exc.message) == (503, "UNAVAILABLE", message)
    assert exc.sqlite_error == name
    assert exc.details[0]["metadata"] == {"sqlite_error": name}
    cause = exc.__cause__
    assert isinstance(cause, sqlite3.Error) and cause.sqlite_errorcode & 0xFF == code


async def test_disk_full_write_fails_alone_and_stores_nothing(store: Store) -> None:
    """A write that runs out of disk raises StoreError and leaves none of its job row, labels or
    event behind; the other writes of its batch commit; once space returns it succeeds."""
    await insert_job(store, make_job(1))
    await disk_full(store)
    small_a = make_job(2, labels={"team": "nlp"})
    # Its job row and labels fit beside the first job; its event (a 200 kB detail) needs new
    # pages, so SQLite runs out of room after the row and labels are written.
    big = make_job(3, labels={"team": "nlp"})
    small_b = make_job(4, labels={"team": "nlp"})
    outcomes = await asyncio.gather(
        store.create_or_get(small_a),
        store.create_or_get(big, detail={"blob": "x" * 200_000}),
        store.create_or_get(small_b),
        return_exceptions=True)
    assert outcomes[0] == (small_a, True) and outcomes[2] == (small_b, True)
    assert isinstance(outcomes[1], BaseException)
    _check_store_error(outcomes[1], FULL, "SQLITE_FULL", sqlite3.SQLITE_FULL)
    await _nothing_of(store, big, labelled=[small_b.id, small_a.id])
    await disk_has_room(store)
    assert await store.create_or_get(big, detail={"blob": "x" * 200_000}) == (big, True)


async def test_disk_full_that_ends_the_transaction_fails_the_whole_batch(store: Store) -> None:
    """When SQLite answers disk-full by rolling back the whole transaction (it does when the
    batch's first statement fails: there is no statement journal to undo just that one), every
    write of the batch raises StoreError and nothing of the batch is stored."""
    await insert_job(store, make_job(1))
    commits = store.commits
    await disk_full(store)
    big = make_job(2, labels={"team": "nlp"}, description="y" * 200_000)
    small = make_job(3, labels={"team": "nlp"})
    outcomes = await asyncio.gather(store.create_or_get(big), store.create_or_get(small),
                                    return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, BaseException)
        _check_store_error(outcome, FULL, "SQLITE_FULL", sqlite3.SQLITE_FULL)
    assert store.commits == commits
    await _nothing_of(store, big, small)
    assert (await store.count_by_state())[LocalState.QUEUED] == 1
    # No transaction was left open: the writer works as soon as there is room again.
    await disk_has_room(store)
    assert await store.create_or_get(small) == (small, True)


async def test_read_only_database_refuses_every_write(store: Store) -> None:
    """With the database read-only, create/apply/update raise StoreError, change nothing and
    /readyz's check says unwritable; reads still answer; writes work once it is writable."""
    job = make_job(1)
    await insert_job(store, job)
    await read_only(store)
    moved = job.evolve(state=LocalState.SUBMITTING, updated_at=job.updated_at + 1)
    commits = store.commits
    outcomes = await asyncio.gather(store.create_or_get(make_job(2, labels={"team": "nlp"})),
                                    store.apply(job, moved, "submit"),
                                    store.update_job(job.evolve(next_action_at=99.0)),
                                    return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, BaseException)
        _check_store_error(outcome, READ_ONLY, "SQLITE_READONLY", sqlite3.SQLITE_READONLY)
    assert store.commits == commits
    assert not await store.check_writable()
    assert await store.get(job.id) == job
    assert len(await store.history(job.id)) == 1
    await _nothing_of(store, make_job(2))
    await read_only(store, False)
    assert await store.check_writable()
    await store.apply(job, moved, "submit")
    assert await store.get(job.id) == moved


async def test_failed_read_is_store_error(store: Store) -> None:
    """A read that SQLite refuses (here: its connection is gone) raises StoreError, not sqlite3."""
    await insert_job(store, make_job(1))
    await store._in_reader(lambda conn: conn.close())
    with pytest.raises(errors.StoreError) as caught:
        await store.get("job0001")
    assert caught.value.message == ("the job store cannot be read: "
                                    "Cannot operate on a closed database.")
    assert isinstance(caught.value.__cause__, sqlite3.ProgrammingError)
    for read in (store.history("job0001"), store.active_and_queued(), store.count_by_state(),
                 store.list_jobs()):
        with pytest.raises(errors.StoreError):
            await read


async def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    """Calls on a closed store raise StoreError (503), not sqlite3.ProgrammingError."""
    store = await Store.open(tmp_path / "tuningd.db")
    await store.close()
    with pytest.raises(errors.StoreError, match="cannot be written: it is closed"):
        await insert_job(store, make_job(1))
    with pytest.raises(errors.StoreError, match="cannot be read: it is closed"):
        await store.get("job0001")
    assert not await store.check_writable()


@pytest.mark.parametrize(("code", "name", "words"), [
    (sqlite3.SQLITE_IOERR, "SQLITE_IOERR", "disk I/O error"),
    (sqlite3.SQLITE_IOERR | (3 << 8), "SQLITE_IOERR_WRITE", "disk I/O error"),
    (sqlite3.SQLITE_FULL, "SQLITE_FULL", "database or disk is full"),
    (sqlite3.SQLITE_READONLY | (1 << 8), "SQLITE_READONLY_RECOVERY", "the database is read-only"),
    (sqlite3.SQLITE_CORRUPT, "SQLITE_CORRUPT", "the database file is corrupt"),
])
def test_store_error_names_the_cause_in_plain_words(code: int, name: str, words: str) -> None:
    """Primary and extended SQLite codes map to one plain reason; the sqlite3 error is the cause."""
    # An I/O error cannot be provoked reliably on a healthy disk, so the classification is
    # checked on sqlite3's own exception carrying the codes SQLite would set.
    exc = sqlite3.OperationalError("SQLite's own text")
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = name
    err = store_error(exc, writing=True)
    assert err.message == f"the job store cannot be written: {words}"
    assert err.sqlite_error == name and err.__cause__ is exc
    assert store_error(exc, writing=False).message == f"the job store cannot be read: {words}"


def test_store_error_keeps_sqlites_text_for_other_errors() -> None:
    """Errors without a plain wording (constraints, closed connections) keep SQLite's text."""
    err = store_error(sqlite3.ProgrammingError("Cannot operate on a closed database."),
                      writing=False)
    assert err.message == "the job store cannot be read: Cannot operate on a closed database."
    assert err.sqlite_error == ""
    assert err.details[0]["metadata"] == {}


def test_process_exits_with_store_left_open(tmp_path: Path) -> None:
    """A process whose store is never closed (a crash path) still exits, keeping its commits."""
    code = ("import asyncio, sys\n"
            "from tuningd.adapters.sqlite.store import Store\n"
            "async def main():\n"
            "    store = await Store.open(sys.argv[1])\n"
            "    await store.create_or_get(Job(id='left', project='p', location='l',\n"
            "        spec_json='{}', base_model='m', state=LocalState.QUEUED,\n"
            "        created_at=1.0, updated_at=1.0))\n"
            "    raise SystemExit(3)\n"
            "from tuningd.core.model import Job, LocalState\n"
            "asyncio.run(main())\n")
    db = tmp_path / "tuningd.db"
    child = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert child.returncode == 3, child.stderr
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT id FROM jobs").fetchall() == [("left",)]


async def test_debug_logs_carry_no_sql_of_aiosqlite(tmp_path: Path) -> None:
    """At log level debug the store's calls add no aiosqlite lines (SQL with job data)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buf = io.StringIO()
    try:
        configure_logging("debug", "json", buf)
        async with await Store.open(tmp_path / "tuningd.db") as s:
            await insert_job(s, make_job(1, description="secret-ish"))
            assert await s.get("job0001") is not None
        logging.getLogger("tuningd.test").debug("marker")  # debug lines do get through
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
    text = buf.getvalue()
    assert "marker" in text
    assert "aiosqlite" not in text and "job0001" not in text


async def test_readiness_probe_writes_only_after_a_refused_commit(store: Store) -> None:
    """While commits succeed, check_writable commits nothing (a query-only connection is
    unwritable all the same); after SQLite refused a whole commit, one probe commit tells."""
    await insert_job(store, make_job(1))
    commits = store.commits
    for _ in range(3):
        assert await store.check_writable()
    assert store.commits == commits
    await read_only(store)
    assert not await store.check_writable()
    await read_only(store, False)
    assert await store.check_writable()
    assert store.commits == commits

    await disk_full(store)
    with pytest.raises(errors.StoreError):
        await store.create_or_get(make_job(2, description="y" * 200_000))
    assert store.commits == commits
    # The probe's one-row update fits in the pages there are: the disk takes a commit again.
    assert await store.check_writable()
    assert store.commits == commits + 1
    assert await store.check_writable()
    assert store.commits == commits + 1
