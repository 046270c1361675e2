"""The jobs database's schema: migrations, the Job <-> row mapping and the SQL of queries."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tuningd.adapters import failpoints
from tuningd.adapters.sqlite.rows import FLOAT_COLUMNS, JOB_COLUMNS
from tuningd.core import errors
from tuningd.core.model import TERMINAL_STATES, Job, LocalState, Outcome
from tuningd.ports import parse_page_key

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


def raw_page_key(row: Sequence[Any]) -> str:
    """page_key of a jobs row read with SELECT_JOB, sound or damaged."""
    return f"{row[_CREATED_AT]!r}|{row[_ID]}"


def job_to_row(job: Job) -> tuple[Any, ...]:
    row: list[Any] = []
    for name in JOB_COLUMNS:
        value = getattr(job, name)
        if isinstance(value, LocalState | Outcome):
            value = value.value
        elif isinstance(value, bool):
            value = int(value)
        elif name in FLOAT_COLUMNS and isinstance(value, int):
            value = float(value)
        row.append(value)
    return tuple(row)


def detail_json(detail: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(detail or {}), sort_keys=True, separators=(",", ":"))


def labels_of(spec_json: str) -> list[tuple[str, str]]:
    """The string-valued client labels of a spec, as (key, value) pairs."""
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
