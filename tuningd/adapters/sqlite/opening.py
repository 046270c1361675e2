"""Opening the jobs database: one daemon per file whatever path names it, owner-only files, and
empty, foreign or damaged files refused in one line that says what to do."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from tuningd.adapters.sqlite.files import DirLock, configure_writer, connect, store_error
from tuningd.adapters.sqlite.rows import JOB_COLUMNS
from tuningd.adapters.sqlite.schema import migrate
from tuningd.core import errors

log = structlog.get_logger("tuningd.adapters.sqlite.store")

# The first 16 bytes of every SQLite 3 database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
OWNER_ONLY = 0o600
# `tuningd serve` exits with this (sysexits' EX_DATAERR) when the database file is unusable, so
# that the unit's RestartPreventExitStatus stops a crash loop that no restart could end.
EXIT_STORE_UNUSABLE = 65
ADVICE = ("restore it from a backup (`tuningd store backup` makes one) or move it away to start "
          "with an empty database; `tuningd store check` shows what is wrong")
# Tables every tuningd database has at SCHEMA_VERSION, and the columns of the side tables.
REQUIRED_COLUMNS: dict[str, frozenset[str]] = {
    "jobs": frozenset(JOB_COLUMNS),
    "job_events": frozenset({"job_id", "seq", "at", "from_state", "to_state", "reason",
                             "detail_json"}),
    "job_labels": frozenset({"job_id", "key", "value", "project", "location", "created_at"}),
    "health": frozenset({"id", "writes"}),
}
# SQLite's answers for a file whose bytes are not a sound database.
_DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class StoreUnusable(errors.FailedPrecondition):
    """The database file is empty, not SQLite, not tuningd's or damaged: a restart cannot help."""


def shown(path: str, resolved: str) -> str:
    """How messages name a database: as configured, and where it really is if elsewhere."""
    # abspath, not Path.resolve: it makes the path absolute without following links.
    absolute = os.path.abspath(path)  # noqa: PTH100
    return path if absolute == resolved else f"{path} (= {resolved})"


def parent_of(path: str) -> str:
    return str(Path(path).parent)


def unusable(name: str, problem: str) -> StoreUnusable:
    return StoreUnusable(f"database {name} {problem}: {ADVICE}")


def is_damage(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _DAMAGE_CODES


# (st_dev, st_ino) of the database files this process holds: a second Store on one of them is
# refused before any descriptor of the file is opened, since closing that descriptor again would
# drop the POSIX locks the first Store's SQLite connections hold on the file.
_HELD: set[tuple[int, int]] = set()
# O_NONBLOCK: a FIFO at the path must be refused, not waited on.
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class FileLock:
    """An exclusive flock on the database file itself, held while the store is open.

    The `.lock` file beside the resolved path covers creation and migration; this one covers
    every other name of the same file (hard links, bind mounts). flock and SQLite's own POSIX
    locks are separate on Linux. The descriptor stays open until the store's connections are
    closed: closing any descriptor of the file would drop SQLite's POSIX locks with it.
    """

    def __init__(self, resolved: str, name: str) -> None:
        busy = errors.StoreLocked(
            f"another tuningd is already using database {name} (through another path to the "
            "same file)")
        try:
            info = Path(resolved).stat()
        except OSError as exc:
            raise errors.FailedPrecondition(
                f"cannot open database {name}: {exc.strerror}") from None
        self.inode = (info.st_dev, info.st_ino)
        if self.inode in _HELD:
            raise busy
        try:
            self.fd: int | None = os.open(resolved, _READ_FLAGS)
        except OSError as exc:
            raise errors.FailedPrecondition(
                f"cannot open database {name}: {exc.strerror}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise busy from None
        _HELD.add(self.inode)

    def release(self) -> None:
        if self.fd is not None:
            _HELD.discard(self.inode)
            os.close(self.fd)
            self.fd = None


@dataclass(frozen=True)
class Opened:
    """A database file checked and locked for one daemon: what Store.open goes on with."""

    resolved: str
    name: str
    dir_lock: DirLock
    file_lock: FileLock

    def release(self) -> None:
        self.file_lock.release()
        self.dir_lock.release()


def prepare(db_path: str) -> Opened:
    """Resolve, lock, create (owner-only, complete or not at all) or check the database file."""
    resolved = os.path.realpath(db_path)
    name = shown(db_path, resolved)
    parent = Path(resolved).parent
    if not parent.is_dir():
        raise errors.FailedPrecondition(
            f"cannot open database {name}: directory {parent} does not exist")
    # The lock comes first so that two daemons never create or migrate the file at once.
    dir_lock = DirLock(resolved, shown=name)
    try:
        if not os.path.lexists(resolved):
            _create(resolved, name)
        file_lock = FileLock(resolved, name)
    except BaseException:
        dir_lock.release()
        raise
    try:
        _check_file(file_lock, resolved, name)
    except BaseException:
        file_lock.release()
        dir_lock.release()
        raise
    return Opened(resolved, name, dir_lock, file_lock)


def _create(resolved: str, name: str) -> None:
    """Build a new, migrated database beside `resolved` and rename it into place, so the path
    never holds a half-made (say, zero-byte) file that the next start would have to refuse."""
    temp = f"{resolved}.creating"
    # Under the daemon lock nobody else creates: leftovers are a killed creation's.
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(temp + suffix).unlink()
    try:
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, OWNER_ONLY)
        # Whatever the umask: SQLite gives the WAL and shared-memory files this file's mode.
        os.fchmod(fd, OWNER_ONLY)
        os.close(fd)
        conn = connect(temp)
        try:
            configure_writer(conn)
            migrate(conn, name)
        finally:
            conn.close()
        fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        Path(temp).rename(resolved)
        dir_fd = os.open(parent_of(resolved), os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise errors.FailedPrecondition(
            f"cannot create database {name}: {exc.strerror}") from None
    except sqlite3.Error as exc:
        raise errors.FailedPrecondition(
            f"cannot create database {name}: {store_error(exc, writing=True).message}") from None
    log.info("store.created", path=resolved)


def _check_file(lock: FileLock, resolved: str, name: str) -> None:
    """Refuse what SQLite would misread: an empty file (a new database to SQLite) or not SQLite."""
    assert lock.fd is not None
    try:
        info = os.fstat(lock.fd)
        head = os.pread(lock.fd, len(SQLITE_MAGIC), 0) if stat.S_ISREG(info.st_mode) else b""
    except OSError as exc:
        raise errors.FailedPrecondition(
            f"cannot open database {name}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise unusable(name, "is not a regular file")
    if info.st_size == 0:
        raise unusable(name, "is empty (0 bytes), so it holds no jobs and is no tuningd database")
    if head != SQLITE_MAGIC:
        raise unusable(name, "is not an SQLite database (its header is not 'SQLite format 3')")
    if info.st_mode & 0o077:
        log.warning("store.file_permissions", path=resolved, mode=oct(info.st_mode & 0o777),
                    hint=f"chmod 600 {resolved}: job specs and state are for the daemon only")


def check_integrity(conn: sqlite3.Connection, name: str) -> None:
    """PRAGMA quick_check and the schema of a database open on `conn` (before migrating)."""
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        first = " ".join(" ".join(problems[:2]).split())
        raise unusable(name, f"is damaged (PRAGMA quick_check: {first[:300]})")
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = [str(row[0]) for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    if version == 0 and tables:
        raise unusable(name, f"is not a tuningd database (schema version 0 with tables "
                             f"{', '.join(sorted(tables)[:5])})")


def check_schema(conn: sqlite3.Connection, name: str) -> None:
    """After migrating: every table and column tuningd uses is there, and the health row."""
    for table, wanted in REQUIRED_COLUMNS.items():
        columns = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
        missing = sorted(wanted - columns)
        if missing:
            what = f"table {table}" if not columns else f"columns {missing} of table {table}"
            raise unusable(name, f"lacks {what} although its schema version says it has them")
    if conn.execute("SELECT COUNT(*) FROM health WHERE id = 1").fetchone()[0] != 1:
        raise unusable(name, "lacks the row of table health")


def opening(name: str, step: Callable[[sqlite3.Connection, str], None]) -> Callable[
        [sqlite3.Connection], None]:
    """`step` on a connection, with SQLite's damage answers as StoreUnusable and other failures
    (disk full, read-only, I/O error) as FailedPrecondition in plain words."""

    def run(conn: sqlite3.Connection) -> None:
        try:
            step(conn, name)
        except sqlite3.Error as exc:
            if is_damage(exc):
                raise unusable(name, f"is damaged (SQLite: {exc})") from None
            raise errors.FailedPrecondition(
                f"cannot open database {name}: "
                f"{store_error(exc, writing=True).message.split(': ', 1)[-1]}") from None

    return run
