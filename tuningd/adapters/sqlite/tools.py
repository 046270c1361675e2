"""`tuningd store check | backup`: a database's soundness down to each row, and online copies."""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.request import pathname2url

from tuningd.adapters.sqlite.files import connect, store_error
from tuningd.adapters.sqlite.opening import (
    ADVICE,
    EXIT_STORE_UNUSABLE,
    OWNER_ONLY,
    REQUIRED_COLUMNS,
    SQLITE_MAGIC,
    is_damage,
    parent_of,
    shown,
)
from tuningd.adapters.sqlite.rows import decode_text, row_to_event, row_to_job
from tuningd.adapters.sqlite.schema import SCHEMA_VERSION, SELECT_JOB
from tuningd.config_values import is_postgres
from tuningd.core import errors
from tuningd.ports import RowDamaged

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
ROW_ADVICE = ("the daemon runs and leaves these rows out of lists and its work; restore a backup "
              "to get them back")


class ToolError(errors.TuningdError):
    """A store command that could not run (no file, unreadable, destination exists)."""


@dataclass
class Report:
    """What `store check` found: file-level problems (unusable) and damaged rows."""

    name: str
    file_problems: list[str] = field(default_factory=list)
    row_problems: list[str] = field(default_factory=list)
    schema_version: int = 0
    jobs: int = 0
    events: int = 0

    @property
    def sound(self) -> bool:
        return not self.file_problems and not self.row_problems


def _check_header(resolved: str, name: str) -> str | None:
    """Why the file is not a database SQLite should read, or None."""
    path = Path(resolved)
    if not path.exists():
        raise ToolError(f"database {name} does not exist")
    if not path.is_file():
        return "is not a regular file"
    with path.open("rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if not head:
        return "is empty (0 bytes), so it holds no jobs and is no tuningd database"
    if head != SQLITE_MAGIC:
        return "is not an SQLite database (its header is not 'SQLite format 3')"
    return None


@contextlib.contextmanager
def _read_only(resolved: str, name: str) -> Iterator[sqlite3.Connection]:
    """A read-only connection (a running daemon may hold the file: SQLite lets both read)."""
    try:
        conn = sqlite3.connect(f"file:{pathname2url(resolved)}?mode=ro", uri=True,
                               isolation_level=None)
    except sqlite3.Error as exc:
        raise ToolError(f"cannot open database {name}: {exc}") from None
    conn.text_factory = decode_text
    try:
        yield conn
    finally:
        conn.close()


def check(path: str) -> Report:
    """Every check the daemon makes at start (integrity_check, the thorough one, instead of
    quick_check), then every job and event row read back as the daemon reads it."""
    resolved = os.path.realpath(path)
    report = Report(shown(path, resolved))
    problem = _check_header(resolved, report.name)
    if problem is not None:
        report.file_problems.append(problem)
        return report
    with _read_only(resolved, report.name) as conn:
        try:
            _scan(conn, report)
        except sqlite3.Error as exc:
            if not is_damage(exc):
                raise ToolError(f"cannot read database {report.name}: "
                                f"{store_error(exc, writing=False).message}") from None
            report.file_problems.append(f"is damaged (SQLite: {exc})")
    return report


def _scan(conn: sqlite3.Connection, report: Report) -> None:
    found = [str(row[0]) for row in conn.execute("PRAGMA integrity_check(20)")]
    if found != ["ok"]:
        report.file_problems.extend(f"is damaged (PRAGMA integrity_check: {' '.join(p.split())})"
                                    for p in found)
        return
    report.schema_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if report.schema_version != SCHEMA_VERSION:
        report.file_problems.append(
            f"has schema version {report.schema_version}; this tuningd uses {SCHEMA_VERSION}"
            + (" and migrates it at start" if report.schema_version < SCHEMA_VERSION else ""))
        return
    for table, wanted in REQUIRED_COLUMNS.items():
        columns = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
        if not wanted <= columns:
            report.file_problems.append(
                f"lacks table {table} or columns {sorted(wanted - columns)}")
    if report.file_problems:
        return
    for row in conn.execute(SELECT_JOB):
        report.jobs += 1
        try:
            row_to_job(row)
        except RowDamaged as exc:
            report.row_problems.append(f"job {exc.key}: {exc.table}.{exc.column} {exc.problem}")
    for row in conn.execute("SELECT job_id, seq, at, from_state, to_state, reason, detail_json "
                            "FROM job_events ORDER BY job_id, seq"):
        report.events += 1
        try:
            row_to_event(row)
        except RowDamaged as exc:
            report.row_problems.append(f"job {exc.key}: {exc.table}.{exc.column} {exc.problem}")


def backup(path: str, destination: str) -> int:
    """Copy the database with SQLite's online backup API (a running daemon keeps writing) into
    `destination`, owner-only, complete or not at all; the jobs in the copy."""
    resolved = os.path.realpath(path)
    name = shown(path, resolved)
    dest = Path(destination)
    if dest.exists() or dest.is_symlink():
        raise ToolError(f"backup destination {destination} exists: name a new file")
    if not dest.parent.is_dir():
        raise ToolError(f"backup destination directory {dest.parent} does not exist")
    problem = _check_header(resolved, name)
    if problem is not None:
        raise StoreToolUnusable(f"database {name} {problem}: nothing to back up")
    partial = Path(f"{destination}.partial")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, OWNER_ONLY)
    os.fchmod(fd, OWNER_ONLY)  # whatever the umask
    os.close(fd)
    try:
        with _read_only(resolved, name) as source:
            copy = connect(str(partial))
            try:
                source.backup(copy)
                # The copy is checked, not the source: a page the backup read damaged shows.
                found = [str(r[0]) for r in copy.execute("PRAGMA quick_check")]
                if found != ["ok"]:
                    raise StoreToolUnusable(f"database {name} is damaged (the copy fails "
                                            f"PRAGMA quick_check: {' '.join(found[0].split())})")
                jobs = int(copy.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
                copy.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
            finally:
                copy.close()
        fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        partial.rename(dest)
        dir_fd = os.open(parent_of(str(dest)), os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except sqlite3.Error as exc:
        if is_damage(exc):
            raise StoreToolUnusable(f"database {name} is damaged (SQLite: {exc})") from None
        raise ToolError(f"cannot back up database {name}: "
                        f"{store_error(exc, writing=False).message}") from None
    finally:
        partial.unlink(missing_ok=True)
    return jobs


class StoreToolUnusable(ToolError):
    """The source database is damaged or no database: the same exit code as `tuningd serve`."""


# --------------------------------------------------------------------------------------------
# Command line


def add_store_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "store", help="check, back up or copy the jobs database",
        description="Check or back up the jobs database (both run beside a running daemon), "
        "or copy it from SQLite into PostgreSQL.")
    actions = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    c = actions.add_parser(
        "check", help="check the database file and every row",
        description="PRAGMA integrity_check, the schema, and every job and event row read as "
        f"the daemon reads it. Exit 0 when sound, {EXIT_STORE_UNUSABLE} when the file or a row "
        f"is damaged, {EXIT_FAILED} when it cannot be read.")
    b = actions.add_parser(
        "backup", help="copy the database online (SQLite's backup API)",
        description="A consistent copy of the database while the daemon runs, written owner-only "
        "to a new file, complete or not at all.")
    b.add_argument("destination", help="the new file to write (must not exist)")
    for sub in (c, b):
        sub.add_argument("--config", metavar="FILE", help="TOML config file (for store.path)")
        sub.add_argument("--db", metavar="PATH",
                         help="the database file (default: store.path of the config)")
    c.set_defaults(func=run_check)
    b.set_defaults(func=run_backup)
    from tuningd.adapters.store_commands import add_copy_command

    add_copy_command(actions)


def _db_path(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    from tuningd.config import load_settings

    store = load_settings(args.config, os.environ).store
    if is_postgres(store.url):
        raise ToolError(f"store.url is a PostgreSQL database ({store.shown}): `store check` and "
                        "`store backup` work on SQLite files; back PostgreSQL up with pg_dump")
    return store.sqlite_path


def run_check(args: argparse.Namespace) -> int:
    try:
        report = check(_db_path(args))
    except errors.TuningdError as exc:
        print(f"tuningd: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, errors.ConfigError) else EXIT_FAILED
    for problem in report.file_problems:
        print(f"damaged: database {report.name} {problem}")
    for problem in report.row_problems:
        print(f"damaged row: {problem}")
    if report.file_problems:
        print(f"tuningd: database {report.name} is unusable: {ADVICE}", file=sys.stderr)
        return EXIT_STORE_UNUSABLE
    summary = (f"{report.jobs} jobs, {report.events} events, schema version "
               f"{report.schema_version}")
    if report.row_problems:
        print(f"tuningd: database {report.name}: {len(report.row_problems)} damaged rows "
              f"({summary}): {ROW_ADVICE}", file=sys.stderr)
        return EXIT_STORE_UNUSABLE
    print(f"ok: database {report.name} is sound ({summary})")
    return EXIT_OK


def run_backup(args: argparse.Namespace) -> int:
    try:
        path = _db_path(args)
        jobs = backup(path, args.destination)
    except StoreToolUnusable as exc:
        print(f"tuningd: {exc.message}", file=sys.stderr)
        return EXIT_STORE_UNUSABLE
    except errors.TuningdError as exc:
        print(f"tuningd: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, errors.ConfigError) else EXIT_FAILED
    except OSError as exc:
        print(f"tuningd: cannot back up to {args.destination}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    print(f"backed up database {path} to {args.destination} ({jobs} jobs)")
    return EXIT_OK
