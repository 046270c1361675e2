"""The numbered schema migrations of every job store, each an intent and its SQL per dialect.

MIGRATIONS[i] moves a store from schema version i to i + 1: SQLite keeps the version in
PRAGMA user_version, PostgreSQL in its schema_migrations table. Never edit a shipped entry;
append a new one, with the SQL of every dialect (tests/unit/test_migrations.py checks both).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["LATEST", "MIGRATIONS", "Dialect", "Migration", "scripts"]


class Dialect(StrEnum):
    """The SQL dialects the stores speak."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"


@dataclass(frozen=True)
class Migration:
    """One step of the schema: what it is for, and the SQL that does it in each dialect."""

    number: int
    intent: str
    sqlite: str
    postgres: str

    def sql(self, dialect: Dialect) -> str:
        return self.sqlite if dialect is Dialect.SQLITE else self.postgres


# SQLite: plain (non-STRICT) tables so that SQLite < 3.37 (Debian 11, RHEL 8) can open the file;
# CHECK constraints keep enum columns honest instead. Its scripts are byte for byte those that
# created every existing database file.
# PostgreSQL: REAL is DOUBLE PRECISION and INTEGER is BIGINT (SQLite's are 64-bit); keys and the
# columns lists sort on are COLLATE "C", so pages come in SQLite's (bytewise) order whatever the
# database's collation. Its first step also makes the engine's lease, which only a store shared by
# several daemons needs (an SQLite file belongs to one daemon, held by a file lock).

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        'Jobs, their event history, and a health row that proves the store still takes commits.',
        sqlite="""
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
        postgres="""
    CREATE TABLE jobs (
        id                 TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        project            TEXT COLLATE "C" NOT NULL,
        location           TEXT COLLATE "C" NOT NULL,
        spec_json          TEXT NOT NULL,
        base_model         TEXT NOT NULL,
        state              TEXT COLLATE "C" NOT NULL CHECK (state IN ('queued', 'submitting',
                           'pending', 'running', 'cancelling', 'succeeded', 'failed',
                           'cancelled')),
        created_at         DOUBLE PRECISION NOT NULL,
        updated_at         DOUBLE PRECISION NOT NULL,
        priority           BIGINT NOT NULL DEFAULT 0,
        request_id         TEXT COLLATE "C",
        display_name       TEXT NOT NULL DEFAULT '',
        attempts           BIGINT NOT NULL DEFAULT 0,
        remote_name        TEXT,
        remote_state       TEXT,
        remote_substate    TEXT,
        remote_json        TEXT,
        cancel_requested   BIGINT NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
        cancel_sent_at     DOUBLE PRECISION,
        next_action_at     DOUBLE PRECISION NOT NULL DEFAULT 0,
        poll_interval_s    DOUBLE PRECISION NOT NULL DEFAULT 0,
        retry_count        BIGINT NOT NULL DEFAULT 0,
        submit_started_at  DOUBLE PRECISION,
        submitted_at       DOUBLE PRECISION,
        ended_at           DOUBLE PRECISION,
        error_code         BIGINT,
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
        job_id      TEXT COLLATE "C" NOT NULL REFERENCES jobs (id),
        seq         BIGINT NOT NULL,
        at          DOUBLE PRECISION NOT NULL,
        from_state  TEXT,
        to_state    TEXT NOT NULL,
        reason      TEXT NOT NULL,
        detail_json TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (job_id, seq)
    );

    CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), writes BIGINT NOT NULL);
    INSERT INTO health (id, writes) VALUES (1, 0);

    -- Who runs the engine: holder '' is nobody; the epoch only ever grows (fencing).
    CREATE TABLE lease (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL DEFAULT '',
        epoch      BIGINT NOT NULL DEFAULT 0,
        expires_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch'
    );
    INSERT INTO lease (name) VALUES ('engine');
    """,
    ),
    Migration(
        2,
        "List filters served by indexes, so filtered pages cost the page, not the history: "
        "job_labels copies each job's (immutable) client labels with its scope and creation "
        "time.",
        sqlite="""
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
        postgres="""
    CREATE INDEX jobs_scope_state_created ON jobs (project, location, state, created_at, id);
    CREATE TABLE job_labels (
        job_id     TEXT COLLATE "C" NOT NULL REFERENCES jobs (id),
        key        TEXT COLLATE "C" NOT NULL,
        value      TEXT COLLATE "C" NOT NULL,
        project    TEXT COLLATE "C" NOT NULL,
        location   TEXT COLLATE "C" NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (job_id, key)
    );
    CREATE INDEX job_labels_lookup ON job_labels (project, location, key, value, created_at,
                                                  job_id);
    INSERT INTO job_labels (job_id, key, value, project, location, created_at)
        SELECT j.id, l.key, l.value #>> '{}', j.project, j.location, j.created_at
        FROM jobs AS j, jsonb_each(CASE WHEN jsonb_typeof(j.spec_json::jsonb -> 'labels')
                                        = 'object' THEN j.spec_json::jsonb -> 'labels'
                                   ELSE '{}'::jsonb END) AS l
        WHERE jsonb_typeof(l.value) = 'string'
        ON CONFLICT DO NOTHING;
    """,
    ),
    Migration(
        3,
        'Evidence for the two "is it really gone?" decisions (a create presumed absent, a '
        "remote job presumed lost), so they survive a restart.",
        sqlite="""
    ALTER TABLE jobs ADD COLUMN attempt_ended_at REAL;
    ALTER TABLE jobs ADD COLUMN absent_checks INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN missing_checks INTEGER NOT NULL DEFAULT 0;
    """,
        postgres="""
    ALTER TABLE jobs ADD COLUMN attempt_ended_at DOUBLE PRECISION;
    ALTER TABLE jobs ADD COLUMN absent_checks BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN missing_checks BIGINT NOT NULL DEFAULT 0;
    """,
    ),
    Migration(
        4,
        "The API version each job's create came in on, which its upstream calls use; jobs "
        "stored before keep NULL and stay at the configured vertex.api_version.",
        sqlite="""
    ALTER TABLE jobs ADD COLUMN api_version TEXT;
    """,
        postgres="""
    ALTER TABLE jobs ADD COLUMN api_version TEXT;
    """,
    ),
    Migration(
        5,
        "Ended jobs by the time they ended, so retention finds the oldest without reading the "
        "rest; only ended jobs have ended_at, so the index holds nothing else.",
        sqlite="""
    CREATE INDEX jobs_ended ON jobs (ended_at) WHERE ended_at IS NOT NULL;
    """,
        postgres="""
    CREATE INDEX jobs_ended ON jobs (ended_at) WHERE ended_at IS NOT NULL;
    """,
    ),
    Migration(
        6,
        "Each job's last error (google.rpc code, message, when), so the reason a job waits "
        "is shown with it; jobs stored before keep NULL (none recorded).",
        sqlite="""
    ALTER TABLE jobs ADD COLUMN last_error_code INTEGER;
    ALTER TABLE jobs ADD COLUMN last_error_message TEXT;
    ALTER TABLE jobs ADD COLUMN last_error_at REAL;
    """,
        postgres="""
    ALTER TABLE jobs ADD COLUMN last_error_code BIGINT;
    ALTER TABLE jobs ADD COLUMN last_error_message TEXT;
    ALTER TABLE jobs ADD COLUMN last_error_at DOUBLE PRECISION;
    """,
    ),
)

LATEST = len(MIGRATIONS)


def scripts(dialect: Dialect) -> tuple[str, ...]:
    """Every migration's SQL in one dialect, in order (index i moves version i to i + 1)."""
    return tuple(m.sql(dialect) for m in MIGRATIONS)
