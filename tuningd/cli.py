"""Command line entry point: `tuningd serve | emulator | submit | list | show | cancel | wait |
watch | status | config | store | migrate`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tuningd import __version__

# What a shell reports for a command killed by SIGPIPE (128 + 13), the usual Unix outcome.
EXIT_BROKEN_PIPE = 141


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the daemon (queue, scheduler, poller, control API)",
        description="Run the tuningd daemon. With --emulator it also starts the built-in Vertex "
        "emulator in the same process and points the daemon at it: no Google account needed.",
    )
    p.add_argument("--config", metavar="FILE",
                   help="TOML config file (default: $TUNINGD_CONFIG, then "
                        "$CONFIGURATION_DIRECTORY/tuningd.toml, then built-in defaults)")
    p.add_argument("--host", help="address of the control API (server.host)")
    p.add_argument("--port", type=int, help="TCP port of the control API (server.port)")
    p.add_argument("--store", metavar="PATH_OR_URL",
                   help="the job store: an SQLite file (store.path), or sqlite:///... or "
                        "postgresql://... (store.url)")
    p.add_argument("--emulator", action="store_true",
                   help="run against an in-process Vertex emulator (the embedded default)")
    p.add_argument("--emulator-job-seconds", type=float, default=20.0, metavar="S",
                   help="with --emulator: simulated tuning time per job (default 20)")
    p.add_argument("--emulator-pending-seconds", type=float, default=2.0, metavar="S",
                   help="with --emulator: simulated time in PENDING (default 2)")
    p.add_argument("--emulator-max-concurrent", type=int, default=2, metavar="N",
                   help="with --emulator: the emulated global concurrency quota (default 2)")
    p.add_argument("--emulator-gcs-root", metavar="DIR",
                   help="with --emulator: read datasets from DIR/bucket/path for gs://bucket/path")
    p.add_argument("--state-dir", metavar="DIR",
                   help="with --emulator: keep the database (DIR/tuningd.db, unless --store "
                        "names one) and the emulator's jobs (DIR/emulator.json, "
                        "emulator.state_dir) across restarts; without it, and with no config, "
                        "both live in a temporary directory deleted on stop")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from tuningd.serve import run_daemon

    return run_daemon(args)


def _add_emulator(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tuningd.config import LOG_FORMATS, LOG_LEVELS
    from tuningd.emulator import cli as emulator_cli

    p = subparsers.add_parser(
        "emulator",
        help="run the standalone Vertex AI tuningJobs emulator",
        description="A faithful emulator of Vertex AI's tuningJobs REST API (v1 and v1beta1), "
        "for tests, CI and laptops.",
    )
    emulator_cli.add_arguments(p)
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                   help="log verbosity (default info)")
    p.add_argument("--log-format", choices=LOG_FORMATS, default="auto",
                   help="auto (default): short console lines on a terminal, JSON lines "
                        "otherwise (a file, a pipe, the journal); json; console")
    p.set_defaults(func=_run_emulator)


def _run_emulator(args: argparse.Namespace) -> int:
    """The standalone emulator, logging as the daemon does (JSON unless stderr is a terminal)."""
    from tuningd.adapters.log import configure_logging
    from tuningd.emulator import cli as emulator_cli

    configure_logging(args.log_level, args.log_format)
    return emulator_cli.run(args)


def _add_config(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "config", help="validate a config file and print the effective settings",
    )
    p.add_argument("--config", metavar="FILE", help="TOML config file")
    p.set_defaults(func=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    import json
    import os

    from tuningd.config import load_settings
    from tuningd.core.errors import ConfigError

    try:
        settings = load_settings(args.config, os.environ)
    except ConfigError as exc:
        print(f"tuningd: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(settings.as_dict(), indent=2, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuningd",
        description="tuningd: a queueing, crash-safe daemon for Vertex AI Gemini tuning jobs.",
    )
    parser.add_argument("--version", action="version", version=f"tuningd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(subparsers)
    _add_emulator(subparsers)
    from tuningd.client import add_client_commands

    add_client_commands(subparsers)
    _add_config(subparsers)
    from tuningd.adapters.sqlite.tools import add_store_commands

    add_store_commands(subparsers)
    from tuningd.adapters.store_commands import add_migrate_command

    add_migrate_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`tuningd list | head`): stop quietly, as a Unix tool does. Python would
        # flush stdout again at exit and print a second error, so point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return result


if __name__ == "__main__":
    sys.exit(main())
