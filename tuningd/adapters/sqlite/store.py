"""SQLite persistence of jobs and their event history: the group-committing writer, the reads,
each on an aiosqlite connection (its own thread and queue)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

import aiosqlite

from tuningd.adapters.sqlite.files import (
    configure_reader,
    configure_writer,
    connect_async,
    on_thread,
    store_error,
)
from tuningd.adapters.sqlite.opening import (
    EXIT_STORE_UNUSABLE,
    Opened,
    StoreUnusable,
    check_integrity,
    check_schema,
    opening,
    prepare,
)
from tuningd.adapters.sqlite.reads import StoreReads
from tuningd.adapters.sqlite.rows import JOB_COLUMNS, row_to_job
from tuningd.adapters.sqlite.schema import (
    ASSIGN_ALL,
    INSERT_JOB,
    MIGRATIONS,
    PRUNE_CANDIDATES,
    SCHEMA_VERSION,
    SELECT_JOB,
    detail_json,
    job_to_row,
    labels_of,
    migrate,
)
from tuningd.core import errors
from tuningd.core.model import Job, LocalState
from tuningd.ports import RowDamaged, StaleWrite, page_key

# The store's public names (and _job_to_row, which benchmarks use to write rows directly).
__all__ = ["EXIT_STORE_UNUSABLE", "JOB_COLUMNS", "MAX_BATCH", "MIGRATIONS", "SCHEMA_VERSION",
           "RowDamaged", "StaleWrite", "Store", "StoreUnusable", "page_key", "store_error"]
_job_to_row = job_to_row

T = TypeVar("T")

# Writes waiting while a commit is in flight go into the next transaction together, at most
# this many (bounds the time one commit holds the writer).
MAX_BATCH = 256
# Batches one turn on the writer's thread commits back to back before other calls queued on that
# connection (a /readyz check, close's checkpoint) get their turn.
DRAIN_BATCHES = 8
# After a commit with no write waiting, the writer's thread waits this long for the next one
# before other calls on its connection get their turn.
DRAIN_IDLE_S = 0.02


def _ready_writer(conn: sqlite3.Connection, name: str) -> None:
    """The writer's pragmas, then the file's integrity, migrations and schema."""
    configure_writer(conn)
    check_integrity(conn, name)
    migrate(conn, name)
    check_schema(conn, name)


_Outcome = tuple[bool, Any]  # (True, result) or (False, exception) of one batched write
_Pending = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]  # a write, its caller


class Store(StoreReads):
    """The jobs database. Open with `await Store.open(path)`; one instance per process.

    Writes go to one aiosqlite connection (one thread, one queue), in transactions with a
    synchronous=FULL commit. Writes that arrive while a commit is in flight are grouped into the
    next transaction (group commit, one call on that thread per batch), each in its own savepoint
    so a failing write changes nothing and fails alone; every caller gets its answer only once the
    transaction holding its write is durable. Reads use a second aiosqlite connection: in WAL
    mode they see the last commit and never wait for the writer.

    After open(), every SQLite failure leaves a method as errors.StoreError (HTTP 503, the
    sqlite3 error as __cause__). When SQLite itself ends the transaction (disk full, I/O error),
    every write of that batch fails and none is stored.
    """

    def __init__(self, path: str, lock: Opened | None, writer: aiosqlite.Connection) -> None:
        self.path = path
        self._lock = lock
        self._writer = writer
        # ":memory:" has one connection for everything (a second one would be another database).
        self._reader = writer
        self._pending: collections.deque[_Pending] = collections.deque()
        # Set when a write is queued: wakes a drain waiting for the next write.
        self._wake = threading.Event()
        # How long a drain waits for the next write (0 with a single connection, where reads
        # queue behind it).
        self._idle_s = DRAIN_IDLE_S
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        # Transactions committed and writes they carried (group commit at work when writes
        # exceed commits); for benchmarks and tests.
        self.commits = 0
        self.writes = 0
        # Whether the last transaction that reached the disk committed (False after SQLite
        # refused a BEGIN or COMMIT: full, read-only, I/O error). /readyz reads it, so a probe
        # writes only to find out whether a refusing disk has recovered.
        self._medium_ok = True
        # Damaged rows (table, key, column) reported so far: each is logged once.
        self.damaged: set[tuple[str, str, str]] = set()

    # ----- lifecycle -----

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Store:
        """Lock, check, open and migrate the database at `path` (":memory:" for a throwaway).

        The lock is on the file the path resolves to, so no alias runs a second daemon. A new
        database is created owner-only; an empty, foreign or damaged file raises StoreUnusable
        (one line: the file and what to do), another daemon's file StoreLocked.
        """
        db_path = os.fspath(path)
        opened: Opened | None = None
        try:
            if db_path != ":memory:":
                # File checks and locks block: off the loop, on a thread of its own.
                opened = await asyncio.to_thread(prepare, db_path)
            target, name = (opened.resolved, opened.name) if opened else (db_path, db_path)
            try:
                conn = await connect_async(target)
            except sqlite3.Error as exc:
                raise errors.FailedPrecondition(f"cannot open database {name}: {exc}") from None
        except BaseException:
            if opened is not None:
                opened.release()
            raise
        store = cls(db_path, opened, conn)
        try:
            await store._in_writer(opening(name, _ready_writer))
            if opened is not None:
                store._reader = await connect_async(target)
                await store._in_reader(configure_reader)
            else:
                store._idle_s = 0.0
        except BaseException:
            await store.close()
            raise
        return store

    async def _in_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` on the writing connection, in its thread (one hop)."""
        return await on_thread(self._writer, fn)

    async def _in_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` on the reading connection, in its thread (one hop)."""
        return await on_thread(self._reader, fn)

    async def close(self) -> None:
        """Finish pending writes, checkpoint and close the database, release the daemon lock."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()  # a drain waiting for the next write returns now
        try:
            if self._flusher is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._flusher)
            if self._reader is not self._writer:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await self._reader.close()

            def checkpoint(conn: sqlite3.Connection) -> None:
                with contextlib.suppress(sqlite3.Error):
                    # Fold the WAL back into the main file so a copied .db is complete.
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

            try:
                with contextlib.suppress(ValueError):  # aiosqlite: "no active connection"
                    await self._in_writer(checkpoint)
            finally:
                # Closes the sqlite3 connection and ends the connection's thread.
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await self._writer.close()
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
        """Run `body` (in the writer's thread) atomically and durably; raise what it raised.

        The write is committed (or rolled back alone) even if the caller is cancelled meanwhile
        (shutdown): a transaction is never left open on the shared connection.
        """
        if self._closed:
            raise errors.StoreError("the job store cannot be written: it is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((body, future))
        self._wake.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="store-group-commit")
        # No shield needed: a cancelled caller cancels only its future; the write is in the
        # batch already and _settle skips a future that is done.
        return await future

    async def _flush(self) -> None:
        """Have the writer's thread commit waiting writes until none are left."""
        loop = asyncio.get_running_loop()
        while self._pending:
            try:
                await self._in_writer(partial(self._drain, loop=loop))
            except BaseException as exc:
                # The connection's thread could not run the drain (closed, or a write raised
                # what is not an Exception): the next batch it did not take fails with it.
                batch = self._take_batch()
                self._settle(batch, [(False, exc)] * len(batch))
                if not isinstance(exc, Exception):
                    raise

    def _take_batch(self) -> list[_Pending]:
        # The loop's thread only appends to _pending and the writer's only pops: a deque does
        # both atomically.
        pending = self._pending
        batch: list[_Pending] = []
        while pending and len(batch) < MAX_BATCH:
            batch.append(pending.popleft())
        return batch

    def _drain(self, conn: sqlite3.Connection, *, loop: asyncio.AbstractEventLoop) -> None:
        """In the writer's thread: commit batches of waiting writes back to back (at most
        DRAIN_BATCHES), the callers of each answered on the loop once its commit is durable.

        The next batch is taken here, as soon as a commit ends, rather than by the loop once it
        gets to it: with the loop busy answering the last batch's callers, the disk idled
        between commits for as long as a commit took (issue 11, bench create_throughput)."""
        batches = 0
        while batches < DRAIN_BATCHES:
            batch = self._take_batch()
            if not batch:
                # Wait a little for the next write rather than hand the thread back: the loop,
                # busy answering the callers just committed, would only start the next commit
                # once it has answered them all, and their next writes would then wait for it.
                self._wake.clear()
                if self._pending:
                    continue
                if self._closed or not self._wake.wait(self._idle_s):
                    return
                continue
            batches += 1
            try:
                outcomes = self._run_batch(conn, [body for body, _ in batch])
            except BaseException as exc:
                loop.call_soon_threadsafe(self._settle, batch, [(False, exc)] * len(batch))
                raise
            loop.call_soon_threadsafe(self._settle, batch, outcomes)

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

    def _run_batch(self, conn: sqlite3.Connection,
                   bodies: Sequence[Callable[[sqlite3.Connection], Any]]) -> list[_Outcome]:
        """In the writer's thread: one transaction, one savepoint per write, one durable commit."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._medium_ok = False
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
        self._medium_ok = True
        self.commits += 1
        self.writes += len(bodies)
        return outcomes

    def _abort(self, conn: sqlite3.Connection, exc: Exception, count: int) -> list[_Outcome]:
        """Roll the open transaction back (if SQLite has not already): every write fails."""
        self._medium_ok = False
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        return [(False, exc)] * count

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        args = tuple(params)
        if self._closed:
            raise errors.StoreError("the job store cannot be read: it is closed")
        try:
            return list(await self._reader.execute_fetchall(sql, args))
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

    async def prune_ended(self, ended_before: float, limit: int) -> int:
        """Delete up to `limit` ended jobs, oldest first, that ended before `ended_before`, with
        their events and labels, in one transaction; the number deleted."""
        if limit <= 0:
            return 0

        def body(conn: sqlite3.Connection) -> int:
            ids = [row[0] for row in conn.execute(PRUNE_CANDIDATES, (ended_before, limit))]
            if ids:
                marks = ", ".join("?" * len(ids))
                for table, column in (("job_events", "job_id"), ("job_labels", "job_id"),
                                      ("jobs", "id")):
                    conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})",  # noqa: S608
                                 ids)
            return len(ids)

        return await self._write(body)

    async def size_bytes(self) -> int | None:
        """The database file's size in pages times the page size (free pages included)."""
        rows = await self._read("SELECT page_count * page_size FROM pragma_page_count(), "
                                "pragma_page_size()")
        return int(rows[0][0])

    async def check_writable(self) -> bool:
        """True if the database still accepts a durable commit (for /readyz).

        While commits succeed this writes nothing (a prober every second would otherwise be an
        fsync a second): the writer's connection answers and is not query-only. After SQLite
        refused a commit, a probe commit tells whether the disk has recovered."""
        if self._closed:
            return False
        if self._medium_ok:
            try:
                (query_only,) = await self._in_writer(
                    lambda conn: conn.execute("PRAGMA query_only").fetchone())
            except (sqlite3.Error, OSError, ValueError):
                return False
            return not query_only

        def body(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE health SET writes = writes + 1 WHERE id = 1")

        try:
            await self._write(body)
        except (errors.StoreError, OSError, ValueError):
            return False
        return True
