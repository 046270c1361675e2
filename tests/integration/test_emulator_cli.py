"""Emulator CLI flags: defaults and their translation into EmulatorConfig (no process started)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tuningd.emulator import EmulatorConfig, QuotaMode
from tuningd.emulator.cli import add_arguments, config_from_args


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    """Without flags the emulator binds 127.0.0.1:8471 with the documented defaults."""
    args = parse()
    assert (args.host, args.port) == ("127.0.0.1", 8471)
    config = config_from_args(args)
    assert config == EmulatorConfig(pending_seconds=5.0, job_seconds=60.0)
    assert config.quota_mode == QuotaMode.WAIT and config.max_concurrent == 1
    assert config.token_seconds == 3599 and config.strict_unknown_fields


def test_every_flag_maps_to_config(tmp_path: Path) -> None:
    """Each flag lands in the matching config field; --error-rate applies to every method."""
    config = config_from_args(parse(
        "--job-seconds", "0.5", "--pending-seconds", "0.25", "--max-concurrent", "3",
        "--quota-mode", "reject", "--error-rate", "0.1", "--error-status", "429",
        "--token-seconds", "600", "--strict-auth", "--gcs-root", str(tmp_path),
        "--project-number", "42", "--seed", "9", "--ignore-unknown-fields",
        "--requests-per-minute", "600", "--creates-per-minute", "60",
        "--cancel-completes-probability", "0.5", "--lost-reply-rate", "0.2",
        "--drop-rate", "0.3", "--latency", "0.05"))
    assert (config.job_seconds, config.pending_seconds) == (0.5, 0.25)
    assert config.max_concurrent == 3 and config.quota_mode == QuotaMode.REJECT
    assert config.faults.error_rates == dict.fromkeys(("create", "get", "list", "cancel"), 0.1)
    assert config.faults.error_status("get") == 429
    assert config.faults.drop_rates["list"] == 0.3
    assert (config.faults.lost_reply_rate, config.faults.latency_s) == (0.2, 0.05)
    assert config.token_seconds == 600 and config.strict_auth
    assert config.gcs_root == tmp_path and config.project_number == "42" and config.seed == 9
    assert not config.strict_unknown_fields
    assert (config.requests_per_minute, config.creates_per_minute) == (600, 60)
    assert config.cancel_completes_probability == 0.5


def test_invalid_values_are_refused() -> None:
    """Out-of-range values raise ValueError instead of starting a broken emulator."""
    with pytest.raises(ValueError, match="error_rate"):
        config_from_args(parse("--error-rate", "2"))
    with pytest.raises(ValueError, match="max_concurrent"):
        config_from_args(parse("--max-concurrent", "0"))
