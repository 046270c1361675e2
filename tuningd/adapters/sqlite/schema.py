"""The jobs database's schema: migrations, the Job <-> row mapping and the SQL of queries."""

from __future__ import annotations

import contextlib
import json
import operator
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tuningd.adapters import failpoints
from tuningd.adapters.migrations import Dialect, scripts
from tuningd.adapters.sqlite.rows import FLOAT_COLUMNS, JOB_COLUMNS
from tuningd.core import errors
from tuningd.core.model import TERMINAL_STATES, Job, LocalState, Outcome
from tuningd.ports import parse_page_key

# Numbered schema migrations: MIGRATIONS[i] moves the schema from version i to i + 1
# (PRAGMA user_version). They live, with their intent and PostgreSQL's SQL, in
# tuningd.adapters.migrations: never edit a shipped entry there; append a new one.
MIGRATIONS: tuple[str, ...] = scripts(Dialect.SQLITE)

SCHEMA_VERSION = len(MIGRATIONS)

SELECT_JOB = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"  # noqa: S608 (fixed column names)
SELECT_LABELLED_JOB = (
    f"SELECT {', '.join('j.' + c for c in JOB_COLUMNS)} "  # noqa: S608 (fixed column names)
    "FROM job_labels AS l JOIN jobs AS j ON j.id = l.job_id"
)
INSERT_JOB = (f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) "  # noqa: S608
               f"VALUES ({', '.join('?' * len(JOB_COLUMNS))})")
ASSIGN_ALL = ", ".join(f"{name} = ?" for name in JOB_COLUMNS[1:])
_CREATED_AT = JOB_COLUMNS.index("created_at")
_ID = JOB_COLUMNS.index("id")
NON_TERMINAL = tuple(s.value for s in LocalState if s not in TERMINAL_STATES)
# The oldest ended jobs first (index jobs_ended); the state check keeps a job that somehow has an
# end time but has not ended out of reach.
PRUNE_CANDIDATES = (
    "SELECT id FROM jobs WHERE ended_at IS NOT NULL AND ended_at < ? "  # noqa: S608 (fixed)
    f"AND state IN ({', '.join(repr(s.value) for s in TERMINAL_STATES)}) "
    "ORDER BY ended_at LIMIT ?")


def raw_page_key(row: Sequence[Any]) -> str:
    """page_key of a jobs row read with SELECT_JOB, sound or damaged."""
    return f"{row[_CREATED_AT]!r}|{row[_ID]}"


_JOB_VALUES = operator.attrgetter(*JOB_COLUMNS)
# Values stored as they are (the common case, checked first: a row is built per write).
_AS_IS = frozenset({str, float, type(None)})


def job_to_row(job: Job) -> tuple[Any, ...]:
    row = list(_JOB_VALUES(job))
    for i, value in enumerate(row):
        if type(value) in _AS_IS:
            continue
        if isinstance(value, LocalState | Outcome):
            row[i] = value.value
        elif isinstance(value, bool):
            row[i] = int(value)
        elif JOB_COLUMNS[i] in FLOAT_COLUMNS and isinstance(value, int):
            row[i] = float(value)
    return tuple(row)


def detail_json(detail: Mapping[str, Any] | None) -> str:
    if not detail:
        return "{}"  # most events (every create's) carry no detail
    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"))


def labels_of(spec_json: str) -> list[tuple[str, str]]:
    """The string-valued client labels of a spec, as (key, value) pairs."""
    if '"labels"' not in spec_json:
        # A spec's JSON text holds the key verbatim whenever it has labels: the common create
        # without labels is not parsed a second time.
        return []
    try:
        labels = json.loads(spec_json).get("labels")
    except (ValueError, AttributeError):
        return []
    if not isinstance(labels, dict):
        return []
    return [(str(k), v) for k, v in labels.items() if isinstance(v, str)]


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the schema of the database `path` (open on `conn`) to SCHEMA_VERSION."""
    row = conn.execute("PRAGMA user_version").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise errors.FailedPrecondition(
            f"database {path} has schema version {version}, newer than this "
            f"tuningd supports ({SCHEMA_VERSION}); upgrade tuningd"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        script = MIGRATIONS[number - 1]
        # The migration and its version bump commit together or not at all.
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{script}")
            failpoints.hit("store.mid_migration")
            # execute, not executescript: that would commit the open transaction first.
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise errors.Internal(
                f"database {path}: migration {number} failed: {exc}") from None


def list_query(project: str | None, location: str | None,
               states: Collection[LocalState] | None, after_key: str | None, limit: int,
               labels: Mapping[str, str] | None) -> tuple[str, list[Any]]:
    """The SQL and parameters of Store.list_jobs (same arguments)."""
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
        created, job_id = parse_page_key(after_key)
        # `created_at <= ?` bounds the index range, so deep pages cost no more than the first.
        where.append(f"{order} <= ? AND ({order} < ? OR {ident} < ?)")
        params.extend((created, created, job_id))
    sql = SELECT_LABELLED_JOB if via_label else SELECT_JOB
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order} DESC, {ident} DESC LIMIT ?"
    params.append(limit)
    return sql, params
