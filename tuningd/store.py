"""SQLite persistence of jobs and their event history: migrations, one writer, one daemon."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from tuningd import errors, failpoints
from tuningd.model import TERMINAL_STATES, Job, JobEvent, LocalState, Outcome

T = TypeVar("T")

# Numbered schema migrations: MIGRATIONS[i] moves the schema from version i to i + 1
# (PRAGMA user_version). Never edit a shipped entry; append a new one.
# Plain (non-STRICT) tables so that SQLite < 3.37 (Debian 11, RHEL 8) can open the file;
# CHECK constraints keep enum columns honest instead.
MIGRATIONS: tuple[str, ...] = (
    # 1: jobs and their events.
    """
    CREATE TABLE jobs (
        id                 TEXT    PRIMARY KEY NOT NULL,
        project            TEXT    NOT NULL,
        location           TEXT    NOT NULL,
        spec_json          TEXT    NOT NULL,
        base_model         TEXT    NOT NULL,
        state              TEXT    NOT NULL CHECK (state IN ('queued', 'submitting', 'pending',
                                   'running', 'cancelling', 'succeeded', 'failed', 'cancelled')),
        created_at         REAL    NOT NULL,
        updated_at         REAL    NOT NULL,
        priority           INTEGER NOT NULL DEFAULT 0,
        request_id         TEXT,
        display_name       TEXT    NOT NULL DEFAULT '',
        attempts           INTEGER NOT NULL DEFAULT 0,
        remote_name        TEXT,
        remote_state       TEXT,
        remote_substate    TEXT,
        remote_json        TEXT,
        cancel_requested   INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
        cancel_sent_at     REAL,
        next_action_at     REAL    NOT NULL DEFAULT 0,
        poll_interval_s    REAL    NOT NULL DEFAULT 0,
        retry_count        INTEGER NOT NULL DEFAULT 0,
        submit_started_at  REAL,
        submitted_at       REAL,
        ended_at           REAL,
        error_code         INTEGER,
        error_message      TEXT,
        outcome            TEXT,
        remote_update_time TEXT
    );
    CREATE INDEX jobs_state ON jobs (state);
    CREATE INDEX jobs_state_next_action ON jobs (state, next_action_at);
    CREATE UNIQUE INDEX jobs_request_id ON jobs (project, location, request_id)
        WHERE request_id IS NOT NULL;
    CREATE INDEX jobs_created ON jobs (created_at, id);
    CREATE INDEX jobs_scope_created ON jobs (project, location, created_at, id);

    CREATE TABLE job_events (
        job_id      TEXT    NOT NULL REFERENCES jobs (id),
        seq         INTEGER NOT NULL,
        at          REAL    NOT NULL,
        from_state  TEXT,
        to_state    TEXT    NOT NULL,
        reason      TEXT    NOT NULL,
        detail_json TEXT    NOT NULL DEFAULT '{}',
        PRIMARY KEY (job_id, seq)
    );

    -- One row that check_writable() rewrites: proves the disk still takes commits.
    CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), writes INTEGER NOT NULL);
    INSERT INTO health (id, writes) VALUES (1, 0);
    """,
    # 2: list filters served by indexes, so filtered pages cost the page, not the history.
    # job_labels copies the (immutable) client labels of each job with its scope and creation
    # time: `labels.k = "v"` pages walk job_labels_lookup in list order.
    """
    CREATE INDEX jobs_scope_state_created ON jobs (project, location, state, created_at, id);
    CREATE TABLE job_labels (
        job_id     TEXT NOT NULL REFERENCES jobs (id),
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        project    TEXT NOT NULL,
        location   TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (job_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX job_labels_lookup ON job_labels (project, location, key, value, created_at,
                                                  job_id);
    INSERT OR IGNORE INTO job_labels (job_id, key, value, project, location, created_at)
        SELECT j.id, l.key, l.value, j.project, j.location, j.created_at
        FROM jobs AS j, json_each(j.spec_json, '$.labels') AS l
        WHERE json_type(j.spec_json, '$.labels') = 'object' AND l.type = 'text';
    """,
    # 3: evidence for the two "is it really gone?" decisions (a create presumed absent, a remote
    # job presumed lost), so they survive a restart.
    """
    ALTER TABLE jobs ADD COLUMN attempt_ended_at REAL;
    ALTER TABLE jobs ADD COLUMN absent_checks INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN missing_checks INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: the API version each job's create came in on, which its upstream calls use. Jobs stored
    # before keep NULL: they were created at the configured vertex.api_version and stay at it.
    # No CHECK: the set of versions is Google's and grows; the API stores only those it serves.
    """
    ALTER TABLE jobs ADD COLUMN api_version TEXT;
    """,
)

# Writes waiting while a commit is in flight go into the next transaction together, at most
# this many (bounds the time one commit holds the writer).
MAX_BATCH = 256

SCHEMA_VERSION = len(MIGRATIONS)

# Every Job field is a column of the same name, in this order (checked at open).
JOB_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Job))
_FLOAT_COLUMNS = frozenset({
    "created_at", "updated_at", "cancel_sent_at", "next_action_at", "poll_interval_s",
    "submit_started_at", "submitted_at", "ended_at", "attempt_ended_at",
})
_SELECT_JOB = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"  # noqa: S608 (fixed column names)
_SELECT_LABELLED_JOB = (
    f"SELECT {', '.join('j.' + c for c in JOB_COLUMNS)} "  # noqa: S608 (fixed column names)
    "FROM job_labels AS l JOIN jobs AS j ON j.id = l.job_id"
)
_INSERT_JOB = (f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) "  # noqa: S608
               f"VALUES ({', '.join('?' * len(JOB_COLUMNS))})")
_ASSIGN_ALL = ", ".join(f"{name} = ?" for name in JOB_COLUMNS[1:])
_NON_TERMINAL = tuple(s.value for s in LocalState if s not in TERMINAL_STATES)


class StaleWrite(errors.Internal):
    """A write's `before` no longer matches the stored row: a bug, since there is one writer."""


def page_key(job: Job) -> str:
    """The keyset-pagination key of a job: list_jobs(after_key=...) continues after it."""
    return f"{job.created_at!r}|{job.id}"


def _parse_page_key(key: str) -> tuple[float, str]:
    created, sep, job_id = key.partition("|")
    try:
        if not sep:
            raise ValueError(key)
        return float(created), job_id
    except ValueError:
        raise errors.InvalidArgument(f"invalid page key {key!r}") from None


def _job_to_row(job: Job) -> tuple[Any, ...]:
    row: list[Any] = []
    for name in JOB_COLUMNS:
        value = getattr(job, name)
        if isinstance(value, LocalState | Outcome):
            value = value.value
        elif isinstance(value, bool):
            value = int(value)
        elif name in _FLOAT_COLUMNS and isinstance(value, int):
            value = float(value)
        row.append(value)
    return tuple(row)


def _row_to_job(row: Sequence[Any]) -> Job:
    values = dict(zip(JOB_COLUMNS, row, strict=True))
    values["state"] = LocalState(values["state"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    if values["outcome"] is not None:
        values["outcome"] = Outcome(values["outcome"])
    return Job(**values)


def _row_to_event(row: Sequence[Any]) -> JobEvent:
    job_id, seq, at, from_state, to_state, reason, detail_json = row
    return JobEvent(
        job_id=job_id,
        seq=seq,
        at=at,
        from_state=None if from_state is None else LocalState(from_state),
        to_state=LocalState(to_state),
        reason=reason,
        detail=json.loads(detail_json),
    )


def _detail_json(detail: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(detail or {}), sort_keys=True, separators=(",", ":"))


class _DirLock:
    """An exclusive flock on `<db>.lock`, held while the store is open."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path + ".lock"
        # flock (not a PID file): the kernel drops it when the process dies, even on kill -9,
        # so a crashed daemon never blocks its successor. os.open's fd is non-inheritable, so
        # child processes (e.g. an emulator) cannot keep the lock alive after we die.
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise errors.FailedPrecondition(
                f"cannot open lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder()
            os.close(self._fd)
            self._fd = None
            raise errors.StoreLocked(
                f"another tuningd{holder} is already using {db_path} (lock {self.path})"
            ) from None
        # The PID is only a hint for humans; the flock is the lock.
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def _read_holder(self) -> str:
        try:
            pid = os.pread(self._fd or -1, 32, 0).decode().strip()
        except (OSError, UnicodeDecodeError):
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        # The file itself stays: unlinking it would let a newcomer lock a fresh inode while a
        # third process still waits on the old one, and two daemons would run.
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _labels_of(spec_json: str) -> list[tuple[str, str]]:
    """The string-valued client labels of a spec, as (key, value) pairs."""
    try:
        labels = json.loads(spec_json).get("labels")
    except (ValueError, AttributeError):
        return []
    if not isinstance(labels, dict):
        return []
    return [(str(k), v) for k, v in labels.items() if isinstance(v, str)]


# Plain words for the SQLite result codes a failing disk or file gives (primary codes; the
# extended ones, e.g. SQLITE_IOERR_WRITE, share their low byte). Other errors keep SQLite's text.
_PLAIN_REASONS: Mapping[int, str] = {
    sqlite3.SQLITE_FULL: "database or disk is full",
    sqlite3.SQLITE_READONLY: "the database is read-only",
    sqlite3.SQLITE_IOERR: "disk I/O error",
    sqlite3.SQLITE_CORRUPT: "the database file is corrupt",
    sqlite3.SQLITE_NOTADB: "the database file is not a database",
    sqlite3.SQLITE_CANTOPEN: "the database file cannot be opened",
    sqlite3.SQLITE_PERM: "access to the database file is denied",
    sqlite3.SQLITE_BUSY: "the database is locked by another process",
    sqlite3.SQLITE_NOMEM: "out of memory",
}


def store_error(exc: sqlite3.Error, *, writing: bool) -> errors.StoreError:
    """The StoreError (HTTP 503) that tells a client, in plain words, why a store call failed;
    `exc` becomes its __cause__."""
    code = getattr(exc, "sqlite_errorcode", None)
    reason = _PLAIN_REASONS.get(code & 0xFF) if isinstance(code, int) else None
    name = getattr(exc, "sqlite_errorname", None)
    err = errors.StoreError(
        f"the job store cannot be {'written' if writing else 'read'}: "
        f"{reason or str(exc) or type(exc).__name__}",
        sqlite_error=name if isinstance(name, str) else "", writing=writing,
    )
    err.__cause__ = exc
    return err


def _connect(db_path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves instead of relying on the sqlite3
    # module's implicit transactions. Each connection is only ever used by its own thread.
    return sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)


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

    def __init__(self, path: str, lock: _DirLock | None, writer: sqlite3.Connection,
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
        lock: _DirLock | None = None
        if db_path != ":memory:":
            parent = Path(db_path).parent
            if not parent.is_dir():
                raise errors.FailedPrecondition(
                    f"cannot open database {db_path}: directory {parent} does not exist")
            # The lock comes first so that two daemons never run migrations concurrently.
            lock = _DirLock(db_path)
        loop = asyncio.get_running_loop()
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuningd-store-w")
        try:
            conn = await loop.run_in_executor(thread, _connect, db_path)
        except sqlite3.Error as exc:
            thread.shutdown(wait=False)
            if lock is not None:
                lock.release()
            raise errors.FailedPrecondition(f"cannot open database {db_path}: {exc}") from None
        store = cls(db_path, lock, conn, thread)
        try:
            await store._in_writer(store._configure, conn)
            await store._in_writer(store._migrate)
            await store._in_writer(store._check_columns)
            if db_path != ":memory:":
                store._reader_thread = ThreadPoolExecutor(max_workers=1,
                                                          thread_name_prefix="tuningd-store-r")
                store._reader = await store._in_reader(_connect, db_path)
                await store._in_reader(store._configure_reader, store._reader)
        except BaseException:
            await store.close()
            raise
        return store

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

    async def _in_reader(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reader_thread, fn, *args)

    @staticmethod
    def _configure(conn: sqlite3.Connection) -> None:
        # WAL: readers never block the writer and a commit is one sequential append.
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL fsyncs the WAL on every commit. NORMAL would be faster but in WAL mode may lose
        # the last commits on power loss; losing a `submitting` row written before a create
        # call could make us submit the same job twice, so durability wins over speed. Group
        # commit (see _run_batch) makes one fsync serve every write waiting at that moment.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Brief waits instead of instant SQLITE_BUSY if an operator reads the file meanwhile.
        conn.execute("PRAGMA busy_timeout = 5000")

    @staticmethod
    def _configure_reader(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA query_only = ON")

    def _user_version(self) -> int:
        row = self._writer.execute("PRAGMA user_version").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        version = self._user_version()
        if version > SCHEMA_VERSION:
            raise errors.FailedPrecondition(
                f"database {self.path} has schema version {version}, newer than this "
                f"tuningd supports ({SCHEMA_VERSION}); upgrade tuningd"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            script = MIGRATIONS[number - 1]
            # The migration and its version bump commit together or not at all.
            try:
                self._writer.executescript(f"BEGIN IMMEDIATE;\n{script}")
                failpoints.hit("store.mid_migration")
                # execute, not executescript: that would commit the open transaction first.
                self._writer.execute(f"PRAGMA user_version = {number}")
                self._writer.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._writer.execute("ROLLBACK")
                raise errors.Internal(
                    f"database {self.path}: migration {number} failed: {exc}") from None

    def _check_columns(self) -> None:
        columns = {row[1] for row in self._writer.execute("PRAGMA table_info(jobs)").fetchall()}
        missing = [name for name in JOB_COLUMNS if name not in columns]
        if missing:
            raise errors.Internal(
                f"jobs table lacks columns {missing}: a Job field was added without a migration")

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
        row = _job_to_row(job)
        detail_text = _detail_json(detail)  # fail on unserializable detail before writing
        labels = [(job.id, key, value, job.project, job.location, float(job.created_at))
                  for key, value in _labels_of(job.spec_json)]

        def body(conn: sqlite3.Connection) -> tuple[Job, bool]:
            if job.request_id is not None:
                existing = conn.execute(
                    f"{_SELECT_JOB} WHERE project = ? AND location = ? AND request_id = ?",
                    (job.project, job.location, job.request_id),
                ).fetchone()
                if existing is not None:
                    return _row_to_job(existing), False
            try:
                conn.execute(_INSERT_JOB, row)
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
        row = _job_to_row(after)
        detail_text = _detail_json(detail)

        def body(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                f"UPDATE jobs SET {_ASSIGN_ALL} "  # noqa: S608
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
        row = _job_to_row(job)

        def body(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                f"UPDATE jobs SET {_ASSIGN_ALL} WHERE id = ? AND state = ?",  # noqa: S608
                (*row[1:], job.id, job.state.value),
            )
            if cur.rowcount != 1:
                raise StaleWrite(
                    f"job {job.id}: no stored row in state {job.state.value}; update not stored")

        await self._write(body)

    # ----- reads -----

    async def get(self, job_id: str) -> Job | None:
        """The job with this local id, or None."""
        rows = await self._read(f"{_SELECT_JOB} WHERE id = ?", (job_id,))
        return _row_to_job(rows[0]) if rows else None

    async def get_by_request_id(self, project: str, location: str,
                                request_id: str) -> Job | None:
        """The job created with this requestId in this project and location, or None."""
        rows = await self._read(
            f"{_SELECT_JOB} WHERE project = ? AND location = ? AND request_id = ?",
            (project, location, request_id),
        )
        return _row_to_job(rows[0]) if rows else None

    async def history(self, job_id: str) -> list[JobEvent]:
        """The job's events, oldest first."""
        rows = await self._read(
            "SELECT job_id, seq, at, from_state, to_state, reason, detail_json "
            "FROM job_events WHERE job_id = ? ORDER BY seq",
            (job_id,),
        )
        return [_row_to_event(row) for row in rows]

    async def active_and_queued(self) -> list[Job]:
        """Every non-terminal job (the engine's working set), oldest first."""
        marks = ", ".join("?" * len(_NON_TERMINAL))
        rows = await self._read(
            f"{_SELECT_JOB} WHERE state IN ({marks}) ORDER BY created_at, id",
            _NON_TERMINAL,
        )
        return [_row_to_job(row) for row in rows]

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
        label_items = sorted((labels or {}).items())
        # With a scope and a label, walk that label's index in list order (job_labels_lookup).
        via_label = bool(label_items) and project is not None and location is not None
        col = "j." if via_label else ""
        where: list[str] = []
        params: list[Any] = []
        if via_label:
            key, value = label_items.pop(0)
            where.append("l.project = ? AND l.location = ? AND l.key = ? AND l.value = ?")
            params.extend((project, location, key, value))
        else:
            if project is not None:
                where.append("project = ?")
                params.append(project)
            if location is not None:
                where.append("location = ?")
                params.append(location)
        if states:
            values = sorted({LocalState(s).value for s in states})
            where.append(f"{col}state IN ({', '.join('?' * len(values))})")
            params.extend(values)
        for key, value in label_items:
            where.append(f"EXISTS (SELECT 1 FROM job_labels AS x WHERE x.job_id = {col}id "  # noqa: S608
                         "AND x.key = ? AND x.value = ?)")
            params.extend((key, value))
        order = "l.created_at" if via_label else "created_at"
        ident = "l.job_id" if via_label else "id"
        if after_key is not None:
            created, job_id = _parse_page_key(after_key)
            # `created_at <= ?` bounds the index range, so deep pages cost no more than the first.
            where.append(f"{order} <= ? AND ({order} < ? OR {ident} < ?)")
            params.extend((created, created, job_id))
        sql = _SELECT_LABELLED_JOB if via_label else _SELECT_JOB
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order} DESC, {ident} DESC LIMIT ?"
        params.append(limit)
        return [_row_to_job(row) for row in await self._read(sql, params)]

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
