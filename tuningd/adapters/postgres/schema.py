"""PostgreSQL's schema version and its migrations (the shared numbered list), one step at a time."""

from __future__ import annotations

import contextlib

import asyncpg
import structlog

from tuningd.adapters.migrations import LATEST, MIGRATIONS, Dialect
from tuningd.adapters.postgres.failures import Conn
from tuningd.core import errors

__all__ = ["migrate", "schema_version"]

log = structlog.get_logger("tuningd.store")

# pg_advisory_lock key held while migrating, so daemons starting together migrate once.
_MIGRATION_LOCK = 0x7475_6E69_6E67  # "tuning"

_BOOK = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        number     INTEGER PRIMARY KEY,
        intent     TEXT NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
    )
"""


async def schema_version(conn: Conn) -> int:
    """The database's schema version: the last migration applied (0 for an empty database)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(number), 0) FROM schema_migrations"))


async def migrate(conn: Conn, name: str) -> tuple[int, int]:
    """Apply the pending migrations to the database `name` (shown in messages, no password);
    (version before, version after). Each step commits with its record or not at all."""
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        async with conn.transaction():
            await conn.execute(_BOOK)
        before = await schema_version(conn)
        if before > LATEST:
            raise errors.FailedPrecondition(
                f"database {name} has schema version {before}, newer than this tuningd "
                f"supports ({LATEST}); upgrade tuningd")
        for migration in MIGRATIONS[before:]:
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql(Dialect.POSTGRES))
                    await conn.execute("INSERT INTO schema_migrations (number, intent) "
                                       "VALUES ($1, $2)", migration.number, migration.intent)
            except asyncpg.PostgresError as exc:
                raise errors.Internal(
                    f"database {name}: migration {migration.number} failed: {exc}") from None
            log.info("store.migrated", database=name, version=migration.number)
        return before, max(before, LATEST)
    finally:
        # A broken connection drops the lock with the session; its error is the one to see.
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
