"""The jobs database's files: the one-daemon lock, connections (plain and aiosqlite) and their
pragmas, and SQLite failures in plain words."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Mapping
from typing import TypeVar, cast

import aiosqlite

from tuningd.adapters.sqlite.rows import decode_text
from tuningd.core import errors


class DirLock:
    """An exclusive flock on `<db>.lock`, held while the store is open.

    `db_path` is the resolved path (symlinks followed), so every alias of a database shares one
    lock file; `shown` is how messages name the database (the configured path).
    """

    def __init__(self, db_path: str, *, shown: str | None = None) -> None:
        self.path = db_path + ".lock"
        # flock (not a PID file): the kernel drops it when the process dies, even on kill -9,
        # so a crashed daemon never blocks its successor. os.open's fd is non-inheritable, so
        # child processes (e.g. an emulator) cannot keep the lock alive after we die.
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                           0o600)
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
                f"another tuningd{holder} is already using {shown or db_path} "
                f"(lock {self.path})"
            ) from None
        # Owner-only whatever the umask (a no-op but for a lock file someone else made).
        with contextlib.suppress(OSError):
            os.fchmod(self._fd, 0o600)
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


def connect(db_path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves instead of relying on the sqlite3
    # module's implicit transactions. Each connection is only ever used by its own thread.
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    # One cell of bad UTF-8 must not fail a whole query (a list): store_rows refuses that row.
    conn.text_factory = decode_text
    return conn


async def connect_async(db_path: str) -> aiosqlite.Connection:
    """An aiosqlite connection (its own thread and queue) set up as connect() sets up its own."""
    conn = aiosqlite.connect(db_path, isolation_level=None)
    # aiosqlite's thread is not a daemon: a store left open (a crash path that never reaches
    # close()) would keep the process from exiting. A daemon thread cut off at exit loses
    # nothing: no caller waits any more, and SQLite rolls an unfinished transaction back.
    conn._thread.daemon = True
    await conn

    def setup(raw: sqlite3.Connection) -> None:
        raw.text_factory = decode_text

    try:
        await on_thread(conn, setup)
    except BaseException:
        await conn.close()
        raise
    return conn


T = TypeVar("T")


async def on_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn(sqlite3 connection)` on the aiosqlite connection's own thread, in one queue hop.

    aiosqlite's public methods are one hop per statement; a group-commit batch (BEGIN, a
    savepoint and the statements of every write, COMMIT) must be one hop, or the hops, not the
    fsync, bound the write rate. aiosqlite has no public call for that, so this uses the queue
    its own methods use (`_execute`, `_conn`; pyproject asks for aiosqlite >= 0.22, where the
    connection holds its thread instead of being one); the store tests cover it.
    """
    return cast(T, await conn._execute(lambda: fn(conn._conn)))  # type: ignore[no-untyped-call]


def configure_writer(conn: sqlite3.Connection) -> None:
    """The pragmas of the one writing connection."""
    # WAL: readers never block the writer and a commit is one sequential append.
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL fsyncs the WAL on every commit. NORMAL would be faster but in WAL mode may lose
    # the last commits on power loss; losing a `submitting` row written before a create
    # call could make us submit the same job twice, so durability wins over speed. Group
    # commit (see Store._run_batch) makes one fsync serve every write waiting at that moment.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    # Brief waits instead of instant SQLITE_BUSY if an operator reads the file meanwhile.
    conn.execute("PRAGMA busy_timeout = 5000")


def configure_reader(conn: sqlite3.Connection) -> None:
    """The pragmas of the reading connection."""
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA query_only = ON")
