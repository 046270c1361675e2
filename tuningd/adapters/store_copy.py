"""`tuningd store copy`: every job, event and label of an SQLite file into an empty PostgreSQL
database, in one transaction, counts checked before it commits."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.request import pathname2url

from tuningd import config_values
from tuningd.adapters.postgres.store import pg_row, pg_text
from tuningd.adapters.sqlite.rows import JOB_COLUMNS, decode_text, row_to_event, row_to_job
from tuningd.adapters.sqlite.schema import SELECT_JOB
from tuningd.adapters.sqlite.store import Store
from tuningd.adapters.stores import open_postgres
from tuningd.core import errors
from tuningd.ports import RowDamaged

__all__ = ["Copied", "CopyError", "copy_store", "sqlite_file_of"]

EVENT_COLUMNS = ("job_id", "seq", "at", "from_state", "to_state", "reason", "detail_json")
LABEL_COLUMNS = ("job_id", "key", "value", "project", "location", "created_at")


class CopyError(errors.TuningdError):
    """A copy that cannot be made (damaged source, non-empty target, counts that differ)."""


@dataclass(frozen=True)
class Copied:
    """What one copy moved."""

    source: str
    target: str
    jobs: int
    events: int
    labels: int


@dataclass(frozen=True)
class _Rows:
    jobs: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    labels: list[tuple[Any, ...]]


def sqlite_file_of(url: str) -> str | None:
    """The SQLite file a --from/--to value names (sqlite:///PATH or a plain path), else None."""
    if config_values.is_postgres(url):
        return None
    return config_values.sqlite_path(url, url)


def _read_sqlite(path: str) -> _Rows:
    """Every job, event and label row, read in one transaction and checked as the daemon reads
    them; CopyError naming the first damaged row."""
    conn = sqlite3.connect(f"file:{pathname2url(os.path.realpath(path))}?mode=ro", uri=True,
                           isolation_level=None)
    conn.text_factory = decode_text
    try:
        conn.execute("BEGIN")
        try:
            jobs = [pg_row(row_to_job(r)) for r in conn.execute(SELECT_JOB)]
            events = []
            for r in conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} "  # noqa: S608 (fixed)
                                  "FROM job_events ORDER BY job_id, seq"):
                row_to_event(r)
                events.append((r[0], r[1], float(r[2]), r[3], r[4], pg_text(r[5]), r[6]))
        except RowDamaged as exc:
            raise CopyError(
                f"database {path}: job {exc.key}: {exc.table}.{exc.column} {exc.problem}; "
                "nothing copied (`tuningd store check` lists every damaged row)") from None
        labels = [(r[0], r[1], r[2], r[3], r[4], float(r[5])) for r in conn.execute(
            f"SELECT {', '.join(LABEL_COLUMNS)} FROM job_labels")]  # noqa: S608 (fixed)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return _Rows(jobs, events, labels)


async def copy_store(source: str, target: str) -> Copied:
    """Copy the SQLite store `source` into the empty PostgreSQL database `target` (migrated
    first). The source is opened as the daemon opens it (its lock: stop the daemon first)."""
    path = sqlite_file_of(source)
    if path is None or not config_values.is_postgres(target):
        raise errors.ConfigError(
            "store copy copies an SQLite file (--from sqlite:///PATH or a path) into a "
            "PostgreSQL database (--to postgresql://...)")
    if not await asyncio.to_thread(Path(path).is_file):
        raise CopyError(f"database {path} does not exist")
    # Open as the daemon would: no daemon may be using it, and its schema is brought up to date.
    async with await Store.open(path):
        rows = await asyncio.to_thread(_read_sqlite, path)
    shown = config_values.redact_url(target)
    store = await open_postgres(target)
    try:
        await store.in_transaction(lambda conn: _fill(conn, rows, shown))
    finally:
        await store.close()
    return Copied(path, shown, len(rows.jobs), len(rows.events), len(rows.labels))


async def _fill(conn: Any, rows: _Rows, shown: str) -> None:
    """In the target's transaction: refuse a non-empty target, copy, compare the counts."""
    await conn.execute("LOCK TABLE jobs, job_events, job_labels IN EXCLUSIVE MODE")
    held = await conn.fetchval("SELECT COUNT(*) FROM jobs")
    held_events = await conn.fetchval("SELECT COUNT(*) FROM job_events")
    if held or held_events:
        raise CopyError(
            f"database {shown} already holds {held} jobs and {held_events} events: store copy "
            "only fills an empty database (nothing was copied)")
    await conn.copy_records_to_table("jobs", records=rows.jobs, columns=list(JOB_COLUMNS))
    await conn.copy_records_to_table("job_events", records=rows.events,
                                     columns=list(EVENT_COLUMNS))
    await conn.copy_records_to_table("job_labels", records=rows.labels,
                                     columns=list(LABEL_COLUMNS))
    for table, wanted in (("jobs", rows.jobs), ("job_events", rows.events),
                          ("job_labels", rows.labels)):
        found = await conn.fetchval(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 (fixed)
        if found != len(wanted):
            raise CopyError(f"database {shown}: {table} holds {found} rows after the copy, "
                            f"not {len(wanted)}; nothing was copied")
