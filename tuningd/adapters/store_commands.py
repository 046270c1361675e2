"""`tuningd migrate` (the schema brought up to date) and `tuningd store copy` (SQLite into
PostgreSQL)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
from pathlib import Path
from urllib.request import pathname2url

from tuningd import config_values
from tuningd.core import errors

__all__ = ["add_copy_command", "add_migrate_command", "migrate_store"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _sqlite_version(path: str) -> int:
    """An SQLite file's schema version (0 when it does not exist yet)."""
    if not Path(path).is_file():
        return 0
    try:
        conn = sqlite3.connect(f"file:{pathname2url(os.path.realpath(path))}?mode=ro", uri=True)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # Store.open says what is wrong with the file


async def migrate_store(url: str, path: str) -> tuple[str, int, int]:
    """Apply the pending migrations to the configured store (url, else the SQLite file at
    `path`); (where, version before, version after)."""
    if config_values.is_postgres(url):
        from tuningd.adapters.stores import open_postgres

        store = await open_postgres(url)
        await store.close()
        before, after = store.migrated
        return config_values.redact_url(url), before, after
    from tuningd.adapters.sqlite.store import SCHEMA_VERSION, Store

    file = config_values.sqlite_path(url, path)
    before = await asyncio.to_thread(_sqlite_version, file)
    async with await Store.open(file):
        pass
    return file, before, max(before, SCHEMA_VERSION)


def add_migrate_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "migrate", help="bring the configured store's schema up to date",
        description="Apply the pending schema migrations to the store the config names "
        "(store.url, else store.path) and print the versions before and after. Idempotent; "
        "`tuningd serve` migrates at start too, so this is for doing it ahead of a roll-out.")
    p.add_argument("--config", metavar="FILE", help="TOML config file")
    p.set_defaults(func=_run_migrate)


def _run_migrate(args: argparse.Namespace) -> int:
    from tuningd.config import load_settings

    try:
        store = load_settings(args.config, os.environ).store
        where, before, after = asyncio.run(migrate_store(store.url, store.path))
    except errors.TuningdError as exc:
        print(f"tuningd: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, errors.ConfigError) else EXIT_FAILED
    if before == after:
        print(f"store {where}: schema version {after} is current, nothing to migrate")
    else:
        print(f"store {where}: migrated from schema version {before} to {after}")
    return EXIT_OK


def add_copy_command(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = actions.add_parser(
        "copy", help="copy every job and event from SQLite into an empty PostgreSQL database",
        description="Copy every job, event and label of an SQLite database into an empty "
        "PostgreSQL database (migrated first), in one transaction whose counts are checked "
        "before it commits. Stop the daemon that uses the SQLite file first.")
    c.add_argument("--from", dest="source", required=True, metavar="URL",
                   help="the SQLite database: sqlite:///PATH or a path")
    c.add_argument("--to", dest="target", required=True, metavar="URL",
                   help="the PostgreSQL database: postgresql://USER@HOST[:PORT]/DB")
    c.set_defaults(func=_run_copy)


def _run_copy(args: argparse.Namespace) -> int:
    try:
        from tuningd.adapters.store_copy import copy_store

        copied = asyncio.run(copy_store(args.source, args.target))
    except errors.TuningdError as exc:
        print(f"tuningd: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, errors.ConfigError) else EXIT_FAILED
    print(f"copied {copied.jobs} jobs, {copied.events} events and {copied.labels} labels "
          f"from {copied.source} to {copied.target} (counts verified)")
    return EXIT_OK
