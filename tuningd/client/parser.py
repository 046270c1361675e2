"""The client commands' arguments, help and exit codes; each command's module is imported only
when it runs (so `tuningd serve` does not load the terminal library)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from tuningd.client.connection import (
    DEFAULT_LOCATION,
    DEFAULT_SERVER,
    DEFAULT_TIMEOUT_S,
    ClientError,
    ServerError,
)

Command = Callable[[argparse.Namespace], int]

# Kept equal to client.live's (that module is not imported to build the parser).
DEFAULT_INTERVAL_S = 1.0
EXIT_CODES = ("exit codes: 0 ok, 1 the server answered with an error, 2 usage error or bad "
              "input file, 3 cannot connect to the server.")
WAIT_CODES = ("exit codes: 0 every job succeeded, 4 a job failed, 5 a job was cancelled (and "
              "none failed), 6 --max-wait passed first, 130 interrupted (Ctrl-C); 1 the server "
              "answered with an error, 2 usage error, 3 cannot connect (wait rides out a "
              "restart of the daemon for up to a minute).")
_PREFIX_HELP = "job id, a unique prefix of one (4+ characters), or projects/P/locations/L/" \
               "tuningJobs/ID"


def _seconds(text: str) -> float:
    """A positive number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _run(module: str, name: str) -> Command:
    """The command `name` of tuningd.client.`module`, errors turned into exit codes."""

    def run(args: argparse.Namespace) -> int:
        command: Command = getattr(importlib.import_module(f"tuningd.client.{module}"), name)
        try:
            return command(args)
        except ServerError as exc:
            print(f"tuningd: error: {exc.http_status} {exc.status}: {exc.message}",
                  file=sys.stderr)
            return exc.exit_code
        except ClientError as exc:
            print(f"tuningd: error: {exc}", file=sys.stderr)
            return exc.exit_code

    return run


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument("--server", metavar="URL",
                       help=f"control API URL (default: $TUNINGD_URL, else {DEFAULT_SERVER})")
    group.add_argument("--token-file", metavar="FILE",
                       help="file holding the API bearer token (default: $TUNINGD_TOKEN_FILE)")
    group.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                       help=f"seconds to wait for the server (default {DEFAULT_TIMEOUT_S:g})")
    return common


def _scope_options(parser: argparse.ArgumentParser, *, everywhere: bool = False) -> None:
    parser.add_argument("--project", help="Google Cloud project (default: $TUNINGD_PROJECT, "
                                          "else $GOOGLE_CLOUD_PROJECT)" + (
                        "; with none set, every project" if everywhere else ""))
    parser.add_argument("--location", help="region (default: $TUNINGD_LOCATION, else "
                                           f"$GOOGLE_CLOUD_LOCATION, else {DEFAULT_LOCATION})")
    if everywhere:
        parser.add_argument("--all-projects", action="store_true",
                            help="every project and location the daemon holds")


def _filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", help="only jobs in this state (queued, running, succeeded, "
                                        "... or a JOB_STATE_* name)")
    parser.add_argument("--filter", help="AIP-160 list filter, e.g. 'labels.team=nlp'")


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=_seconds, default=DEFAULT_INTERVAL_S, metavar="S",
                        help=f"seconds between looks (default {DEFAULT_INTERVAL_S:g})")
    parser.add_argument("--max-wait", type=_seconds, metavar="S",
                        help="give up after S seconds (exit 6); default: no limit")


def add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register submit, list, show, cancel, wait, watch and status; each sets
    `func(args) -> exit code`."""
    common = _common_options()
    formatter = argparse.RawDescriptionHelpFormatter

    p = subparsers.add_parser(
        "submit", parents=[common], help="queue a tuning job", formatter_class=formatter,
        description="Queue a Vertex TuningJob (JSON, either dialect).",
        epilog=f"{EXIT_CODES}\nwith --wait, {WAIT_CODES}")
    p.add_argument("file", metavar="FILE", help="TuningJob JSON file, or - for stdin")
    _scope_options(p)
    p.add_argument("--priority", type=int, help="higher is submitted first (default 0)")
    p.add_argument("--request-id", metavar="ID",
                   help="idempotency key (1-64 of A-Z a-z 0-9 _ -; a UUID fits)")
    p.add_argument("--api-version", choices=("v1beta1", "v1"), default="v1beta1",
                   help="the Vertex API version the job is sent at (default v1beta1, as the "
                        "SDKs: its jobs show their sub-states)")
    p.add_argument("--json", action="store_true", help="print the TuningJob JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the job id")
    p.add_argument("--wait", action="store_true",
                   help="then wait until the job ends, printing its changes (exit code: how "
                        "it ended)")
    _wait_options(p)
    p.set_defaults(func=_run("commands", "cmd_submit"))

    p = subparsers.add_parser(
        "list", parents=[common], help="list tuning jobs", epilog=EXIT_CODES,
        description="List tuning jobs, newest first (all pages): short id, state, sub-state, "
                    "priority, queue position, age (queued) or run time, display name and "
                    "reason (the last error).")
    _scope_options(p, everywhere=True)
    _filter_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON array of TuningJobs")
    p.set_defaults(func=_run("commands", "cmd_list"))

    p = subparsers.add_parser("show", parents=[common], epilog=EXIT_CODES,
                              help="show one job, its reasons and its history")
    p.add_argument("job", metavar="ID", help=_PREFIX_HELP)
    p.add_argument("--json", action="store_true", help="print the TuningJob JSON")
    p.set_defaults(func=_run("commands", "cmd_show"))

    p = subparsers.add_parser("cancel", parents=[common], help="cancel a job", epilog=EXIT_CODES)
    p.add_argument("job", metavar="ID", help=_PREFIX_HELP)
    p.set_defaults(func=_run("commands", "cmd_cancel"))

    p = subparsers.add_parser(
        "wait", parents=[common], help="wait until jobs end; the exit code says how",
        description="Poll until every job named has ended, printing each change of state "
                    "(-q: nothing).", epilog=WAIT_CODES)
    p.add_argument("jobs", metavar="ID", nargs="+", help=_PREFIX_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    _wait_options(p)
    p.set_defaults(func=_run("live", "cmd_wait"))

    p = subparsers.add_parser(
        "watch", parents=[common], help="follow jobs live",
        description="Follow the jobs that have not ended (and those that end meanwhile): a "
                    "table redrawn in place on a terminal, one line per change otherwise. "
                    "Runs until Ctrl-C (exit 0), or until every job named has ended.",
        epilog=EXIT_CODES)
    p.add_argument("jobs", metavar="ID", nargs="*",
                   help=f"only these jobs ({_PREFIX_HELP})")
    _scope_options(p, everywhere=True)
    p.add_argument("--filter", help="AIP-160 list filter, e.g. 'labels.team=nlp'")
    p.add_argument("--interval", type=_seconds, default=DEFAULT_INTERVAL_S, metavar="S",
                   help=f"seconds between looks (default {DEFAULT_INTERVAL_S:g})")
    p.set_defaults(func=_run("live", "cmd_watch"))

    p = subparsers.add_parser(
        "status", parents=[common], help="the daemon at a glance", epilog=EXIT_CODES,
        description="Jobs by state, the queue's depth and oldest job, active jobs against every "
                    "limit, paused creates (the breaker) and the last successful poll.")
    p.add_argument("--json", action="store_true", help="print the status JSON")
    p.set_defaults(func=_run("commands", "cmd_status"))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tuningd.client COMMAND ...`: the client commands without the daemon's."""
    parser = argparse.ArgumentParser(prog="tuningd", description="tuningd client commands")
    add_client_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
