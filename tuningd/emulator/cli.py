"""`tuningd emulator` command-line flags and the standalone server loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

import structlog

from tuningd.emulator.config import (
    DEFAULT_PROJECT_NUMBER,
    EmulatorConfig,
    ManualClock,
    QuotaMode,
    SystemClock,
)
from tuningd.emulator.faults import FAULT_STATUSES, METHODS, Faults
from tuningd.emulator.server import Emulator

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
    parser.add_argument("--manual-clock", action="store_true",
                        help="time moves only through POST /emulator/advance")


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Translate parsed flags into an EmulatorConfig (raises ValueError on bad values)."""
    faults = Faults.from_json({
        "error_rate": args.error_rate,
        "error_status": dict.fromkeys(METHODS, args.error_status),
        "drop_rate": args.drop_rate,
        "lost_reply_rate": args.lost_reply_rate,
        "latency_s": args.latency,
    })
    return EmulatorConfig(
        project_number=str(args.project_number),
        pending_seconds=args.pending_seconds,
        job_seconds=args.job_seconds,
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
        log.error("emulator_bad_config", error=str(exc))
        return 2
    asyncio.run(_serve(config, args.host, args.port, manual_clock=args.manual_clock))
    return 0


async def _serve(config: EmulatorConfig, host: str, port: int, *, manual_clock: bool) -> None:
    clock = ManualClock() if manual_clock else SystemClock()
    emulator = Emulator(config, clock=clock, host=host, port=port)
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
