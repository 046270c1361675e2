"""Real SQLite faults on a Store's own writer connection, for tests (no mocks)."""

from __future__ import annotations

import sqlite3

from tuningd.adapters.sqlite.store import Store

# SQLite's default, and largest, max_page_count: the file may grow again.
UNLIMITED_PAGES = 4_294_967_294


async def on_writer(store: Store, sql: str) -> int:
    """Run one statement on the store's writer connection, in its thread (PRAGMAs such as
    max_page_count and query_only are per connection); the first column of the answer."""
    def run(conn: sqlite3.Connection) -> int:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0
    return await store._in_writer(run)


async def disk_full(store: Store) -> None:
    """From now on the database file cannot grow by a single page (SQLITE_FULL)."""
    pages = await on_writer(store, "PRAGMA page_count")
    await on_writer(store, f"PRAGMA max_page_count = {pages}")


async def disk_has_room(store: Store) -> None:
    """Undo disk_full()."""
    await on_writer(store, f"PRAGMA max_page_count = {UNLIMITED_PAGES}")


async def read_only(store: Store, on: bool = True) -> None:
    """Make the database refuse every write (SQLITE_READONLY), or accept them again."""
    await on_writer(store, f"PRAGMA query_only = {int(on)}")
