"""`tuningd emulator` command-line flags and the standalone server loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

import structlog

from tuningd.core.errors import TuningdError
from tuningd.emulator.config import (
    DEFAULT_PROJECT_NUMBER,
    EmulatorConfig,
    ManualClock,
    QuotaMode,
    SystemClock,
)
from tuningd.emulator.faults import FAULT_STATUSES, METHODS, RULE_STATUSES, ErrorRule, Faults

log = structlog.get_logger("tuningd.emulator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the emulator's flags on a (sub)parser."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8471, help="port, 0 = any free (default 8471)")
    parser.add_argument("--project-number", default=DEFAULT_PROJECT_NUMBER,
                        help="project number used in returned resource names")
    parser.add_argument("--pending-seconds", type=float, default=5.0,
                        help="seconds a job stays PENDING once it holds a quota slot")
    parser.add_argument("--job-seconds", type=float, default=60.0,
                        help="seconds a job stays RUNNING before it succeeds")
    parser.add_argument("--seconds-per-million-tokens", type=float, default=0.0, metavar="S",
                        help="when > 0, RUNNING lasts the job's billable tokens (tokens x "
                             "epochs) times this rate per million, as on Vertex, instead of "
                             "--job-seconds")
    parser.add_argument("--run-spread", type=float, default=0.0, metavar="F",
                        help="with --seconds-per-million-tokens: each job's run time varies "
                             "by up to this fraction (fixed per job)")
    parser.add_argument("--cancel-seconds", type=float, default=1.0,
                        help="seconds a job stays CANCELLING")
    parser.add_argument("--max-concurrent", type=int, default=1,
                        help="global concurrent tuning job quota (default 1)")
    parser.add_argument("--quota-mode", choices=[m.value for m in QuotaMode],
                        default=QuotaMode.WAIT.value,
                        help="wait: extra jobs wait in PENDING; reject: 429 at create")
    parser.add_argument("--requests-per-minute", type=int, default=0,
                        help="API request rate limit per minute (0 = off)")
    parser.add_argument("--creates-per-minute", type=int, default=0,
                        help="create rate limit per minute (0 = off)")
    parser.add_argument("--token-seconds", type=int, default=3599,
                        help="lifetime of issued access tokens")
    parser.add_argument("--strict-auth", action="store_true",
                        help="accept only unexpired tokens issued by POST /token")
    parser.add_argument("--gcs-root", type=Path, default=None,
                        help="directory that stands in for gs:// (gs://b/p -> DIR/b/p)")
    parser.add_argument("--seed", type=int, default=None, help="seed for ids and fault dice")
    parser.add_argument("--ignore-unknown-fields", action="store_true",
                        help="ignore unknown JSON fields instead of answering 400")
    parser.add_argument("--cancel-completes-probability", type=float, default=0.0,
                        help="probability that a cancelled job completes anyway")
    parser.add_argument("--error-rate", type=float, default=0.0,
                        help="probability of an injected error on every API method")
    parser.add_argument("--error-status", type=int, default=503, choices=sorted(FAULT_STATUSES),
                        help="HTTP status of injected errors (default 503)")
    parser.add_argument("--drop-rate", type=float, default=0.0,
                        help="probability of closing the connection without a response")
    parser.add_argument("--lost-reply-rate", type=float, default=0.0,
                        help="probability that a create succeeds but its reply is dropped")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds of latency added to every API call")
    parser.add_argument("--late-create-rate", type=float, default=0.0,
                        help="probability that a valid create lands late: no answer now, the "
                             "job appears --late-create-hold-s + --late-create-delay-s later")
    parser.add_argument("--late-create-delay-s", type=float, default=90.0,
                        help="clock seconds after the hold until a late create lands "
                             "(default 90)")
    parser.add_argument("--late-create-hold-s", type=float, default=0.0,
                        help="wall seconds a late create's request is held open before the "
                             "connection closes without an answer (default 0)")
    parser.add_argument("--list-lag-s", type=float, default=0.0,
                        help="list answers show the jobs as they were this many seconds ago")
    parser.add_argument("--error-rule", action="append", default=[], metavar="RULE",
                        help="answer matching calls with an error (repeatable; first match "
                             "wins): METHOD:PROJECT[/LOCATION]:STATUS[:RATE[:REASON_OR_NAME]], "
                             "METHOD create|get|list|cancel|*, PROJECT and LOCATION exact or "
                             "*, STATUS one of " + ",".join(map(str, sorted(RULE_STATUSES)))
                             + ", RATE 0..1 (default 1), REASON for 403 IAM_PERMISSION_DENIED|"
                             "SERVICE_DISABLED|BILLING_DISABLED|CONSUMER_INVALID, for 401 "
                             "ACCESS_TOKEN_EXPIRED|ACCESS_TOKEN_TYPE_UNSUPPORTED|"
                             "CREDENTIALS_MISSING, or a status name: FAILED_PRECONDITION (400), "
                             "ALREADY_EXISTS (409). E.g. create:my-proj:403, "
                             "*:*/europe-west4:503:0.5, get:*:403:1:SERVICE_DISABLED. "
                             "A JSON object with the ErrorRule fields also works")
    parser.add_argument("--malformed-rate", type=float, default=0.0,
                        help="probability of a 200 answer with an HTML body (create: the job "
                             "is created; get/list/cancel: nothing changes)")
    parser.add_argument("--truncated-rate", type=float, default=0.0,
                        help="probability of a 200 answer whose JSON body is cut in half "
                             "(create: the job is created; get/list/cancel: nothing changes)")
    parser.add_argument("--manual-clock", action="store_true",
                        help="time moves only through POST /emulator/advance")
    parser.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                        help="keep the jobs in DIR/emulator.json across restarts (by default "
                             "they are in memory and forgotten on stop)")


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Translate parsed flags into an EmulatorConfig (raises ValueError on bad values)."""
    rules = []
    for text in args.error_rule:
        try:
            rules.append(ErrorRule.parse(text).to_json())
        except ValueError as exc:
            raise ValueError(f"--error-rule {text!r}: {exc}") from None
    faults = Faults.from_json({
        "error_rate": args.error_rate,
        "error_status": dict.fromkeys(METHODS, args.error_status),
        "drop_rate": args.drop_rate,
        "lost_reply_rate": args.lost_reply_rate,
        "latency_s": args.latency,
        "late_create_rate": args.late_create_rate,
        "late_create_delay_s": args.late_create_delay_s,
        "late_create_hold_s": args.late_create_hold_s,
        "list_lag_s": args.list_lag_s,
        "error_rules": rules,
        "malformed_rate": args.malformed_rate,
        "truncated_rate": args.truncated_rate,
    })
    return EmulatorConfig(
        project_number=str(args.project_number),
        pending_seconds=args.pending_seconds,
        job_seconds=args.job_seconds,
        seconds_per_million_tokens=args.seconds_per_million_tokens,
        run_spread=args.run_spread,
        cancel_seconds=args.cancel_seconds,
        cancel_completes_probability=args.cancel_completes_probability,
        max_concurrent=args.max_concurrent,
        quota_mode=QuotaMode(args.quota_mode),
        strict_unknown_fields=not args.ignore_unknown_fields,
        token_seconds=args.token_seconds,
        strict_auth=args.strict_auth,
        gcs_root=args.gcs_root,
        seed=args.seed,
        requests_per_minute=args.requests_per_minute,
        creates_per_minute=args.creates_per_minute,
        faults=faults,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; exit code 0, or 2 for invalid settings."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        log.error("config.rejected", error=str(exc))
        return 2
    try:
        asyncio.run(_serve(config, args.host, args.port, manual_clock=args.manual_clock,
                           state_dir=getattr(args, "state_dir", None)))
    except TuningdError as exc:  # the state directory is locked or its file unreadable
        log.error("emulator.failed", error=exc.message)
        return 1
    return 0


async def _serve(config: EmulatorConfig, host: str, port: int, *, manual_clock: bool,
                 state_dir: Path | None = None) -> None:
    clock = ManualClock() if manual_clock else SystemClock()
    from tuningd.emulator.server import Emulator  # here: the parser is built on every command

    emulator = Emulator(config, clock=clock, host=host, port=port, state_dir=state_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await emulator.start()
    try:
        await stop.wait()
    finally:
        await emulator.stop()
