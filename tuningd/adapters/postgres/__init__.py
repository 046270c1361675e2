"""The PostgreSQL job store: several daemons on one database (asyncpg)."""

from tuningd.adapters.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
