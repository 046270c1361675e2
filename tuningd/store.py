"""SQLite persistence of jobs and their event history: the group-committing writer, the reads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from tuningd import errors
from tuningd.model import Job, JobEvent, LocalState
from tuningd.store_files import (
    DirLock,
    configure_reader,
    configure_writer,
    connect,
    store_error,
)
from tuningd.store_schema import (
    ASSIGN_ALL,
    INSERT_JOB,
    JOB_COLUMNS,
    MIGRATIONS,
    NON_TERMINAL,
    SCHEMA_VERSION,
    SELECT_JOB,
    check_columns,
    detail_json,
    job_to_row,
    labels_of,
    list_query,
    migrate,
    page_key,
    row_to_event,
    row_to_job,
)

# The store's public names (and _job_to_row, which benchmarks use to write rows directly).
__all__ = ["JOB_COLUMNS", "MAX_BATCH", "MIGRATIONS", "SCHEMA_VERSION", "StaleWrite", "Store",
           "page_key", "store_error"]
_job_to_row = job_to_row

T = TypeVar("T")

# Writes waiting while a commit is in flight go into the next transaction together, at most
# this many (bounds the time one commit holds the writer).
MAX_BATCH = 256


class StaleWrite(errors.Internal):
    """A write's `before` no longer matches the stored row: a bug, since there is one writer."""


_Outcome = tuple[bool, Any]  # (True, result) or (False, exception) of one batched write


class Store:
    """The jobs database. Open with `await Store.open(path)`; one instance per process.

    Writes go to one connection owned by one thread, in transactions with a synchronous=FULL
    commit. Writes that arrive while a commit is in flight are grouped into the next transaction
    (group commit), each in its own savepoint so a failing write changes nothing and fails alone;
    every caller gets its answer only once the transaction holding its write is durable. Reads
    use a second connection and thread: in WAL mode they see the last commit and never wait for
    the writer.

    After open(), every SQLite failure leaves a method as errors.StoreError (HTTP 503, the
    sqlite3 error as __cause__). When SQLite itself ends the transaction (disk full, I/O error),
    every write of that batch fails and none is stored.
    """

    def __init__(self, path: str, lock: DirLock | None, writer: sqlite3.Connection,
                 writer_thread: ThreadPoolExecutor) -> None:
        self.path = path
        self._lock = lock
        self._writer = writer
        self._writer_thread = writer_thread
        # ":memory:" has one connection for everything (a second one would be another database).
        self._reader = writer
        self._reader_thread = writer_thread
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        # Transactions committed and writes they carried (group commit at work when writes
        # exceed commits); for benchmarks and tests.
        self.commits = 0
        self.writes = 0

    # ----- lifecycle -----

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Store:
        """Lock, open and migrate the database at `path` (":memory:" for a throwaway store)."""
        db_path = os.fspath(path)
        lock: DirLock | None = None
        if db_path != ":memory:":
            parent = Path(db_path).parent
            if not parent.is_dir():
                raise errors.FailedPrecondition(
                    f"cannot open database {db_path}: directory {parent} does not exist")
            # The lock comes first so that two daemons never run migrations concurrently.
            lock = DirLock(db_path)
        loop = asyncio.get_running_loop()
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuningd-store-w")
        try:
            conn = await loop.run_in_executor(thread, connect, db_path)
        except sqlite3.Error as exc:
            thread.shutdown(wait=False)
            if lock is not None:
                lock.release()
            raise errors.FailedPrecondition(f"cannot open database {db_path}: {exc}") from None
        store = cls(db_path, lock, conn, thread)
        try:
            await store._in_writer(configure_writer, conn)
            await store._in_writer(migrate, conn, db_path)
            await store._in_writer(check_columns, conn)
            if db_path != ":memory:":
                store._reader_thread = ThreadPoolExecutor(max_workers=1,
                                                          thread_name_prefix="tuningd-store-r")
                store._reader = await store._in_reader(connect, db_path)
                await store._in_reader(configure_reader, store._reader)
        except BaseException:
            await store.close()
            raise
        return store

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

    async def _in_reader(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reader_thread, fn, *args)

    async def close(self) -> None:
        """Finish pending writes, checkpoint and close the database, release the daemon lock."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._flusher is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._flusher)
            if self._reader is not self._writer:
                with contextlib.suppress(sqlite3.Error):
                    await self._in_reader(self._reader.close)
                self._reader_thread.shutdown(wait=False)

            def finish() -> None:
                with contextlib.suppress(sqlite3.Error):
                    # Fold the WAL back into the main file so a copied .db is complete.
                    self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._writer.close()

            await self._in_writer(finish)
            self._writer_thread.shutdown(wait=False)
        finally:
            if self._lock is not None:
                self._lock.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ----- plumbing -----

    async def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run `body` (in the writer thread) atomically and durably; raise what it raised.

        The write is committed (or rolled back alone) even if the caller is cancelled meanwhile
        (shutdown): a transaction is never left open on the shared connection.
        """
        if self._closed:
            raise errors.StoreError("the job store cannot be written: it is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((body, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="store-group-commit")
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        """Commit waiting writes, one transaction per batch, until none are left."""
        while self._pending:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            try:
                outcomes = await self._in_writer(self._run_batch, [b for b, _ in batch])
            except BaseException as exc:  # the thread pool itself failed: fail the batch
                outcomes = [(False, exc)] * len(batch)
                if not isinstance(exc, Exception):
                    self._settle(batch, outcomes)
                    raise
            self._settle(batch, outcomes)

    @staticmethod
    def _settle(batch: Sequence[tuple[Any, asyncio.Future[Any]]],
                outcomes: Sequence[_Outcome]) -> None:
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            elif isinstance(value, sqlite3.Error):
                # One StoreError per caller: an exception instance must not be raised twice.
                future.set_exception(store_error(value, writing=True))
            else:
                future.set_exception(value)

    def _run_batch(self, bodies: Sequence[Callable[[sqlite3.Connection], Any]]) -> list[_Outcome]:
        """In the writer thread: one transaction, one savepoint per write, one durable commit."""
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(False, exc)] * len(bodies)
        outcomes: list[_Outcome] = []
        for body in bodies:
            try:
                conn.execute("SAVEPOINT write")
            except sqlite3.Error as exc:
                return self._abort(conn, exc, len(bodies))
            try:
                result = body(conn)
                conn.execute("RELEASE write")
            except Exception as exc:
                try:
                    conn.execute("ROLLBACK TO write")
                    conn.execute("RELEASE write")
                except sqlite3.Error as undo_exc:
                    # SQLite ended the whole transaction (disk full, I/O error): nothing of
                    # this batch is stored, so every write in it fails, with the error that
                    # ended it.
                    cause = exc if isinstance(exc, sqlite3.Error) else undo_exc
                    return self._abort(conn, cause, len(bodies))
                outcomes.append((False, exc))
            else:
                outcomes.append((True, result))
        try:
            conn.execute("COMMIT")
        except Exception as exc:
            return self._abort(conn, exc, len(bodies))
        self.commits += 1
        self.writes += len(bodies)
        return outcomes

    @staticmethod
    def _abort(conn: sqlite3.Connection, exc: Exception, count: int) -> list[_Outcome]:
        """Roll the open transaction back (if SQLite has not already): every write fails."""
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        return [(False, exc)] * count

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        args = tuple(params)

        def run() -> list[Any]:
            return self._reader.execute(sql, args).fetchall()

        if self._closed:
            raise errors.StoreError("the job store cannot be read: it is closed")
        try:
            return await self._in_reader(run)
        except sqlite3.Error as exc:
            raise store_error(exc, writing=False) from exc

    @staticmethod
    def _insert_event(conn: sqlite3.Connection, job_id: str, at: float,
                      from_state: LocalState | None, to_state: LocalState, reason: str,
                      detail_text: str) -> None:
        conn.execute(
            "INSERT INTO job_events (job_id, seq, at, from_state, to_state, reason, detail_json)"
            " SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ? FROM job_events WHERE job_id = ?",
            (job_id, float(at), None if from_state is None else from_state.value,
             to_state.value, reason, detail_text, job_id),
        )

    # ----- writes -----

    async def create_or_get(self, job: Job, reason: str = "accepted",
                            detail: Mapping[str, Any] | None = None) -> tuple[Job, bool]:
        """Insert `job` with its first event, or return the job already holding its request_id.

        Returns (stored job, created). The request_id is scoped to the job's project and
        location, which makes creates with a `requestId` idempotent.
        """
        row = job_to_row(job)
        detail_text = detail_json(detail)  # fail on unserializable detail before writing
        labels = [(job.id, key, value, job.project, job.location, float(job.created_at))
                  for key, value in labels_of(job.spec_json)]

        def body(conn: sqlite3.Connection) -> tuple[Job, bool]:
            if job.request_id is not None:
                existing = conn.execute(
                    f"{SELECT_JOB} WHERE project = ? AND location = ? AND request_id = ?",
                    (job.project, job.location, job.request_id),
                ).fetchone()
                if existing is not None:
                    return row_to_job(existing), False
            try:
                conn.execute(INSERT_JOB, row)
            except sqlite3.IntegrityError as exc:
                raise errors.AlreadyExists(f"job {job.id} already exists: {exc}") from None
            if labels:
                conn.executemany(
                    "INSERT INTO job_labels (job_id, key, value, project, location, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)", labels)
            self._insert_event(conn, job.id, job.created_at, None, job.state, reason,
                               detail_text)
            return job, True

        return await self._write(body)

    async def insert_job(self, job: Job, reason: str = "accepted",
                         detail: Mapping[str, Any] | None = None) -> Job:
        """Like create_or_get, returning only the stored job (existing one on a request_id hit)."""
        stored, _ = await self.create_or_get(job, reason, detail)
        return stored

    async def apply(self, before: Job, after: Job, reason: str | None,
                    detail: Mapping[str, Any] | None = None, *,
                    notes: Sequence[str] = ()) -> None:
        """Store a transition: the new row and one event (at after.updated_at), atomically.

        An event is written even when the state stays the same (e.g. a cancel intent recorded
        while `submitting`): apply() is for things worth a history line; use update_job() for
        bookkeeping. `notes` are extra history lines written first (state unchanged), such as
        store errors that could not be recorded when they happened; `reason` None writes only
        those. Raises StaleWrite, changing nothing, if the row is not `before` any more.
        """
        if before.id != after.id:
            raise ValueError(f"apply() got two different jobs: {before.id} -> {after.id}")
        row = job_to_row(after)
        detail_text = detail_json(detail)

        def body(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                f"UPDATE jobs SET {ASSIGN_ALL} "  # noqa: S608
                "WHERE id = ? AND state = ? AND updated_at = ?",
                (*row[1:], before.id, before.state.value, float(before.updated_at)),
            )
            if cur.rowcount != 1:
                raise StaleWrite(
                    f"job {before.id}: stored row is not the expected {before.state.value} "
                    f"@ {before.updated_at!r}; transition to {after.state.value} not stored")
            for note in notes:
                self._insert_event(conn, after.id, after.updated_at, before.state,
                                   before.state, note, "{}")
            if reason is not None:
                self._insert_event(conn, after.id, after.updated_at, before.state, after.state,
                                   reason, detail_text)

        await self._write(body)

    async def update_job(self, job: Job) -> None:
        """Store non-transition fields (next_action_at, poll_interval_s, ...) without an event.

        The state must not change here (that is apply()'s job); raises StaleWrite if the stored
        row has another state or does not exist.
        """
        row = job_to_row(job)

        def body(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                f"UPDATE jobs SET {ASSIGN_ALL} WHERE id = ? AND state = ?",  # noqa: S608
                (*row[1:], job.id, job.state.value),
            )
            if cur.rowcount != 1:
                raise StaleWrite(
                    f"job {job.id}: no stored row in state {job.state.value}; update not stored")

        await self._write(body)

    # ----- reads -----

    async def get(self, job_id: str) -> Job | None:
        """The job with this local id, or None."""
        rows = await self._read(f"{SELECT_JOB} WHERE id = ?", (job_id,))
        return row_to_job(rows[0]) if rows else None

    async def get_by_request_id(self, project: str, location: str,
                                request_id: str) -> Job | None:
        """The job created with this requestId in this project and location, or None."""
        rows = await self._read(
            f"{SELECT_JOB} WHERE project = ? AND location = ? AND request_id = ?",
            (project, location, request_id),
        )
        return row_to_job(rows[0]) if rows else None

    async def history(self, job_id: str) -> list[JobEvent]:
        """The job's events, oldest first."""
        rows = await self._read(
            "SELECT job_id, seq, at, from_state, to_state, reason, detail_json "
            "FROM job_events WHERE job_id = ? ORDER BY seq",
            (job_id,),
        )
        return [row_to_event(row) for row in rows]

    async def active_and_queued(self) -> list[Job]:
        """Every non-terminal job (the engine's working set), oldest first."""
        marks = ", ".join("?" * len(NON_TERMINAL))
        rows = await self._read(
            f"{SELECT_JOB} WHERE state IN ({marks}) ORDER BY created_at, id",
            NON_TERMINAL,
        )
        return [row_to_job(row) for row in rows]

    async def places(self) -> list[tuple[str, str]]:
        """Every (project, location) any job was ever accepted for (the places to sweep)."""
        rows = await self._read("SELECT DISTINCT project, location FROM jobs "
                                "ORDER BY project, location")
        return [(str(p), str(loc)) for p, loc in rows]

    async def count_by_state(self) -> dict[LocalState, int]:
        """Number of jobs in each local state (every state present, zero included)."""
        counts = dict.fromkeys(LocalState, 0)
        for state, count in await self._read("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[LocalState(state)] = int(count)
        return counts

    async def list_jobs(self, project: str | None = None, location: str | None = None,
                        states: Collection[LocalState] | None = None,
                        after_key: str | None = None, limit: int = 50,
                        labels: Mapping[str, str] | None = None) -> list[Job]:
        """Jobs newest first (created_at DESC, id DESC), at most `limit`, after `after_key`.

        `project`/`location` None means any; `states` None or empty means all; `labels` keeps
        jobs whose client labels include every given key = value. Pass page_key(last job) as
        `after_key` for the next page. Uses an index (with project and location given, also for
        one state or a label), so the cost is the page size, not the history size.
        """
        if limit < 1:
            raise errors.InvalidArgument(f"limit must be >= 1, got {limit}")
        sql, params = list_query(project, location, states, after_key, limit, labels)
        return [row_to_job(row) for row in await self._read(sql, params)]

    async def list_page(self, project: str | None = None, location: str | None = None,
                        states: Collection[LocalState] | None = None,
                        after_key: str | None = None,
                        limit: int = 50,
                        labels: Mapping[str, str] | None = None) -> tuple[list[Job], str | None]:
        """One page of list_jobs plus the key of the next page (None on the last page)."""
        jobs = await self.list_jobs(project, location, states, after_key, limit + 1, labels)
        if len(jobs) > limit:
            return jobs[:limit], page_key(jobs[limit - 1])
        return jobs, None

    async def check_writable(self) -> bool:
        """True if the database still accepts a durable commit (for /readyz)."""
        if self._closed:
            return False

        def body(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE health SET writes = writes + 1 WHERE id = 1")

        try:
            await self._write(body)
        except (errors.StoreError, OSError, ValueError):
            return False
        return True
