"""The job store a [store] section names, opened: the SQLite file, or a PostgreSQL database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuningd import config_values
from tuningd.core import errors
from tuningd.ports import JobStore

if TYPE_CHECKING:
    from tuningd.adapters.postgres import PostgresStore
    from tuningd.config import StoreSettings

__all__ = ["open_postgres", "open_store"]


async def open_postgres(url: str, *, stale_transaction_s: float | None = None) -> PostgresStore:
    """The PostgreSQL store at `url`, migrated; a ConfigError if asyncpg is not installed.
    `stale_transaction_s`: see PostgresStore.open (None: its default)."""
    try:
        from tuningd.adapters.postgres import PostgresStore
    except ImportError as exc:
        raise errors.ConfigError(
            f"config key store.url: {config_values.redact_url(url)} is a PostgreSQL database, "
            f"but its driver is missing ({exc.name}): pip install 'tuningd[postgres]'") from None
    if stale_transaction_s is None:
        return await PostgresStore.open(url)
    return await PostgresStore.open(url, stale_transaction_s=stale_transaction_s)


async def open_store(settings: StoreSettings, *,
                     stale_transaction_s: float | None = None) -> JobStore:
    """Open (and migrate) the store the settings name (`stale_transaction_s`: PostgreSQL's
    limit on a session idle in a transaction, see PostgresStore.open)."""
    if config_values.is_postgres(settings.url):
        return await open_postgres(settings.url, stale_transaction_s=stale_transaction_s)
    from tuningd.adapters.sqlite.store import Store

    return await Store.open(settings.sqlite_path)
