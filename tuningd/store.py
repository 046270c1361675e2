"""SQLite persistence of jobs and their event history: migrations, one writer, one daemon."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiosqlite

from tuningd import errors
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
)

SCHEMA_VERSION = len(MIGRATIONS)

# Every Job field is a column of the same name, in this order (checked at open).
JOB_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Job))
_FLOAT_COLUMNS = frozenset({
    "created_at", "updated_at", "cancel_sent_at", "next_action_at", "poll_interval_s",
    "submit_started_at", "submitted_at", "ended_at",
})
_SELECT_JOB = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"  # noqa: S608 (fixed column names)
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


class Store:
    """The jobs database. Open with `await Store.open(path)`; one instance per process."""

    def __init__(self, conn: aiosqlite.Connection, path: str, lock: _DirLock | None) -> None:
        self._conn = conn
        self.path = path
        self._lock = lock
        # One connection serves everything, so statements of concurrent coroutines must not
        # interleave inside each other's transactions: every operation holds this lock.
        self._mutex = asyncio.Lock()
        self._closed = False

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
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves instead of relying on the
            # sqlite3 module's implicit transactions.
            conn = await aiosqlite.connect(db_path, isolation_level=None)
        except sqlite3.Error as exc:
            if lock is not None:
                lock.release()
            raise errors.FailedPrecondition(f"cannot open database {db_path}: {exc}") from None
        store = cls(conn, db_path, lock)
        try:
            await store._configure()
            await store._migrate()
            await store._check_columns()
        except BaseException:
            await store.close()
            raise
        return store

    async def _configure(self) -> None:
        # WAL: readers never block the writer and a commit is one sequential append.
        await self._conn.execute("PRAGMA journal_mode = WAL")
        # FULL fsyncs the WAL on every commit. NORMAL would be faster but in WAL mode may lose
        # the last commits on power loss; losing a `submitting` row written before a create
        # call could make us submit the same job twice, so durability wins over speed.
        await self._conn.execute("PRAGMA synchronous = FULL")
        await self._conn.execute("PRAGMA foreign_keys = ON")
        # Brief waits instead of instant SQLITE_BUSY if an operator reads the file meanwhile.
        await self._conn.execute("PRAGMA busy_timeout = 5000")

    async def _user_version(self) -> int:
        async with self._conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        version = await self._user_version()
        if version > SCHEMA_VERSION:
            raise errors.FailedPrecondition(
                f"database {self.path} has schema version {version}, newer than this "
                f"tuningd supports ({SCHEMA_VERSION}); upgrade tuningd"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            script = MIGRATIONS[number - 1]
            # The migration and its version bump commit together or not at all.
            try:
                await self._conn.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
                )
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    await self._conn.execute("ROLLBACK")
                raise errors.Internal(
                    f"database {self.path}: migration {number} failed: {exc}") from None

    async def _check_columns(self) -> None:
        async with self._conn.execute("PRAGMA table_info(jobs)") as cur:
            columns = {row[1] for row in await cur.fetchall()}
        missing = [name for name in JOB_COLUMNS if name not in columns]
        if missing:
            raise errors.Internal(
                f"jobs table lacks columns {missing}: a Job field was added without a migration")

    async def close(self) -> None:
        """Finish, checkpoint and close the database, then release the daemon lock."""
        if self._closed:
            return
        self._closed = True
        try:
            async with self._mutex:
                with contextlib.suppress(sqlite3.Error):
                    # Fold the WAL back into the main file so a copied .db is complete.
                    await self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                await self._conn.close()
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

    async def _write(self, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `body` in one IMMEDIATE transaction; commit, or roll back on any error."""

        async def run() -> T:
            async with self._mutex:
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = await body(self._conn)
                    await self._conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        await self._conn.execute("ROLLBACK")
                    raise
                return result

        # Shielded: a caller cancelled mid-transaction (shutdown) must not leave the shared
        # connection inside an open transaction; the write completes or rolls back on its own.
        return await asyncio.shield(run())

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self._mutex, self._conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    @staticmethod
    async def _insert_event(conn: aiosqlite.Connection, job_id: str, at: float,
                            from_state: LocalState | None, to_state: LocalState, reason: str,
                            detail: Mapping[str, Any] | None) -> None:
        await conn.execute(
            "INSERT INTO job_events (job_id, seq, at, from_state, to_state, reason, detail_json)"
            " SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ? FROM job_events WHERE job_id = ?",
            (job_id, float(at), None if from_state is None else from_state.value,
             to_state.value, reason, _detail_json(detail), job_id),
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

        async def body(conn: aiosqlite.Connection) -> tuple[Job, bool]:
            if job.request_id is not None:
                async with conn.execute(
                    f"{_SELECT_JOB} WHERE project = ? AND location = ? AND request_id = ?",
                    (job.project, job.location, job.request_id),
                ) as cur:
                    existing = await cur.fetchone()
                if existing is not None:
                    return _row_to_job(existing), False
            try:
                await conn.execute(
                    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) "  # noqa: S608
                    f"VALUES ({', '.join('?' * len(JOB_COLUMNS))})",
                    row,
                )
            except sqlite3.IntegrityError as exc:
                raise errors.AlreadyExists(f"job {job.id} already exists: {exc}") from None
            await self._insert_event(conn, job.id, job.created_at, None, job.state, reason,
                                     json.loads(detail_text))
            return job, True

        return await self._write(body)

    async def insert_job(self, job: Job, reason: str = "accepted",
                         detail: Mapping[str, Any] | None = None) -> Job:
        """Like create_or_get, returning only the stored job (existing one on a request_id hit)."""
        stored, _ = await self.create_or_get(job, reason, detail)
        return stored

    async def apply(self, before: Job, after: Job, reason: str,
                    detail: Mapping[str, Any] | None = None) -> None:
        """Store a transition: the new row and one event (at after.updated_at), atomically.

        An event is written even when the state stays the same (e.g. a cancel intent recorded
        while `submitting`): apply() is for things worth a history line; use update_job() for
        bookkeeping. Raises StaleWrite, changing nothing, if the row is not `before` any more.
        """
        if before.id != after.id:
            raise ValueError(f"apply() got two different jobs: {before.id} -> {after.id}")
        row = _job_to_row(after)
        detail_text = _detail_json(detail)
        assignments = ", ".join(f"{name} = ?" for name in JOB_COLUMNS[1:])

        async def body(conn: aiosqlite.Connection) -> None:
            cur = await conn.execute(
                f"UPDATE jobs SET {assignments} "  # noqa: S608
                "WHERE id = ? AND state = ? AND updated_at = ?",
                (*row[1:], before.id, before.state.value, float(before.updated_at)),
            )
            if cur.rowcount != 1:
                raise StaleWrite(
                    f"job {before.id}: stored row is not the expected {before.state.value} "
                    f"@ {before.updated_at!r}; transition to {after.state.value} not stored")
            await self._insert_event(conn, after.id, after.updated_at, before.state, after.state,
                                     reason, json.loads(detail_text))

        await self._write(body)

    async def update_job(self, job: Job) -> None:
        """Store non-transition fields (next_action_at, poll_interval_s, ...) without an event.

        The state must not change here (that is apply()'s job); raises StaleWrite if the stored
        row has another state or does not exist.
        """
        row = _job_to_row(job)
        assignments = ", ".join(f"{name} = ?" for name in JOB_COLUMNS[1:])

        async def body(conn: aiosqlite.Connection) -> None:
            cur = await conn.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ? AND state = ?",  # noqa: S608
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

    async def count_by_state(self) -> dict[LocalState, int]:
        """Number of jobs in each local state (every state present, zero included)."""
        counts = dict.fromkeys(LocalState, 0)
        for state, count in await self._read("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[LocalState(state)] = int(count)
        return counts

    async def list_jobs(self, project: str | None = None, location: str | None = None,
                        states: Collection[LocalState] | None = None,
                        after_key: str | None = None, limit: int = 50) -> list[Job]:
        """Jobs newest first (created_at DESC, id DESC), at most `limit`, after `after_key`.

        `project`/`location` None means any; `states` None or empty means all. Pass
        page_key(last job) as `after_key` for the next page. Uses an index, so the cost is
        the page size, not the history size.
        """
        if limit < 1:
            raise errors.InvalidArgument(f"limit must be >= 1, got {limit}")
        where: list[str] = []
        params: list[Any] = []
        if project is not None:
            where.append("project = ?")
            params.append(project)
        if location is not None:
            where.append("location = ?")
            params.append(location)
        if states:
            values = sorted({LocalState(s).value for s in states})
            where.append(f"state IN ({', '.join('?' * len(values))})")
            params.extend(values)
        if after_key is not None:
            created, job_id = _parse_page_key(after_key)
            # `created_at <= ?` bounds the index range, so deep pages cost no more than the first.
            where.append("created_at <= ? AND (created_at < ? OR id < ?)")
            params.extend((created, created, job_id))
        sql = _SELECT_JOB
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(limit)
        return [_row_to_job(row) for row in await self._read(sql, params)]

    async def list_page(self, project: str | None = None, location: str | None = None,
                        states: Collection[LocalState] | None = None,
                        after_key: str | None = None,
                        limit: int = 50) -> tuple[list[Job], str | None]:
        """One page of list_jobs plus the key of the next page (None on the last page)."""
        jobs = await self.list_jobs(project, location, states, after_key, limit + 1)
        if len(jobs) > limit:
            return jobs[:limit], page_key(jobs[limit - 1])
        return jobs, None

    async def check_writable(self) -> bool:
        """True if the database still accepts a durable commit (for /readyz)."""
        if self._closed:
            return False

        async def body(conn: aiosqlite.Connection) -> None:
            await conn.execute("UPDATE health SET writes = writes + 1 WHERE id = 1")

        try:
            await self._write(body)
        except (sqlite3.Error, OSError, ValueError):
            return False
        return True
