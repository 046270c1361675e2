"""The one numbered list of schema migrations: every step has an intent and SQL in each dialect."""

from __future__ import annotations

import pytest

from tuningd.adapters.migrations import LATEST, MIGRATIONS, Dialect, scripts
from tuningd.adapters.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from tuningd.adapters.sqlite.schema import SCHEMA_VERSION


def test_numbers_run_from_one_without_gaps() -> None:
    """Migration i is at index i - 1, so version i is reached by running the first i."""
    assert [m.number for m in MIGRATIONS] == list(range(1, LATEST + 1))


@pytest.mark.parametrize("dialect", list(Dialect))
def test_every_number_has_sql_in_every_dialect(dialect: Dialect) -> None:
    """No dialect lacks a step: each migration's SQL there is a non-empty statement list."""
    texts = scripts(dialect)
    assert len(texts) == LATEST
    for migration, text in zip(MIGRATIONS, texts, strict=True):
        assert text.strip(), f"migration {migration.number} has no {dialect} SQL"
        assert migration.intent.strip().endswith("."), migration.number


def test_sqlite_store_runs_the_shared_list() -> None:
    """The SQLite store's migrations are the list's SQLite scripts, so its version is LATEST."""
    assert scripts(Dialect.SQLITE) == SQLITE_MIGRATIONS
    assert SCHEMA_VERSION == LATEST
