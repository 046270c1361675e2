"""`tuningd serve`: its flags as settings, the daemon run to its end, and the exit code."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import structlog

from tuningd.adapters.log import Format, configure_logging
from tuningd.adapters.sqlite.store import EXIT_STORE_UNUSABLE, StoreUnusable
from tuningd.app import Daemon
from tuningd.config import load_settings
from tuningd.core.errors import ConfigError, TuningdError

log = structlog.get_logger("tuningd.app")


def flag_overrides(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, str]:
    """`serve --host/--port/--store` as the environment overrides they stand for, so they are
    validated like every other key and outlive a SIGHUP reload."""
    out = dict(env)
    if getattr(args, "host", None):
        out["TUNINGD_SERVER_HOST"] = args.host
    if getattr(args, "port", None) is not None:
        out["TUNINGD_SERVER_PORT"] = str(args.port)
    if getattr(args, "store", None):
        out["TUNINGD_STORE_URL" if "://" in args.store else "TUNINGD_STORE_PATH"] = args.store
    if getattr(args, "state_dir", None):
        state_dir = str(Path(args.state_dir).absolute())
        out["TUNINGD_EMULATOR_STATE_DIR"] = state_dir
        if not {"TUNINGD_STORE_PATH", "TUNINGD_STORE_URL"} & set(out):
            out["TUNINGD_STORE_PATH"] = str(Path(state_dir) / "tuningd.db")
    return out


# The collector's generation thresholds in a serving daemon (CPython's are 700, 10, 10). Each
# create leaves a few hundred short-lived objects: at 700 the young generation was collected every
# one or two creates, and the collector took ~7 % of a create's CPU (issue 11, bench
# create_throughput); at 20,000 it runs every few dozen creates and costs under 1 %.
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Set GC_THRESHOLDS and freeze what exists at start (modules, settings: it lives as long as
    the process, so full collections need not walk it)."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def run_daemon(args: argparse.Namespace) -> int:
    """`tuningd serve`: exit 0 after a clean stop, 2 on a configuration error, 65 when the
    database file is unusable (empty, not SQLite, damaged: see store_open), 1 otherwise."""
    env = flag_overrides(args, os.environ)
    try:
        settings = load_settings(args.config, env)
    except ConfigError as exc:
        print(f"tuningd: {exc.message}", file=sys.stderr)
        return 2
    if getattr(args, "state_dir", None) and not (args.emulator or settings.emulator.enabled):
        print("tuningd: --state-dir keeps the embedded emulator's state: use it with --emulator "
              "(the store alone is --store)", file=sys.stderr)
        return 2
    configure_logging(settings.logging.level, cast(Format, settings.logging.format))
    daemon = Daemon(settings, emulator_args=args, config_path=args.config, env=env)
    tune_gc()
    try:
        asyncio.run(daemon.run())
    except (TuningdError, ExceptionGroup) as exc:
        err = _unwrap(exc)
        if err is None:
            raise
        log.error("daemon.failed", status=err.status, error=err.message)
        print(f"tuningd: {err.message}", file=sys.stderr)
        if isinstance(err, StoreUnusable):
            return EXIT_STORE_UNUSABLE
        return 2 if isinstance(err, ConfigError) else 1
    return 0


def _unwrap(exc: BaseException) -> TuningdError | None:
    """The TuningdError inside a TaskGroup's exception group (or the error itself)."""
    if isinstance(exc, TuningdError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _unwrap(inner)
            if found is not None:
                return found
    return None
