"""Emulator CLI flags: defaults and their translation into EmulatorConfig (no process started)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tuningd.cli import build_parser
from tuningd.emulator import METHODS, EmulatorConfig, ErrorRule, Faults, QuotaMode
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


def test_new_fault_flags_map_to_faults() -> None:
    """Late creates, list lag, error rules and garbled replies reach EmulatorConfig.faults."""
    config = config_from_args(parse(
        "--late-create-rate", "0.25", "--late-create-delay-s", "30", "--late-create-hold-s", "2",
        "--list-lag-s", "15", "--malformed-rate", "0.1", "--truncated-rate", "0.2",
        "--error-rule", "create:my-proj:403",
        "--error-rule", "*:*/europe-west4:503:0.5",
        "--error-rule", "get:123456789012:403:1:SERVICE_DISABLED",
        "--error-rule", "cancel:*:400::FAILED_PRECONDITION",
        "--error-rule", '{"status": 409, "method": "list", "status_name": "ALREADY_EXISTS"}'))
    faults = config.faults
    assert (faults.late_create_rate, faults.late_create_delay_s) == (0.25, 30.0)
    assert (faults.late_create_hold_s, faults.list_lag_s) == (2.0, 15.0)
    assert faults.malformed_rates == dict.fromkeys(METHODS, 0.1)
    assert faults.truncated_rates == dict.fromkeys(METHODS, 0.2)
    assert faults.error_rules == (
        ErrorRule(403, method="create", project="my-proj"),
        ErrorRule(503, location="europe-west4", rate=0.5),
        ErrorRule(403, method="get", project="123456789012", reason="SERVICE_DISABLED"),
        ErrorRule(400, method="cancel", status_name="FAILED_PRECONDITION"),
        ErrorRule(409, method="list", status_name="ALREADY_EXISTS"),
    )


def test_new_fault_flag_defaults() -> None:
    """Without the new flags nothing new is injected and a late create would wait 90 s."""
    faults = config_from_args(parse()).faults
    assert faults == Faults()
    assert faults.late_create_delay_s == 90.0 and faults.error_rules == ()


@pytest.mark.parametrize(("argv", "match"), [
    (("--error-rule", "create:my-proj"), "--error-rule 'create:my-proj'"),
    (("--error-rule", "delete:*:403"), "method must be one of"),
    (("--error-rule", "*:*:418"), "status must be one of"),
    (("--error-rule", "*:*:403:1.5"), "rate must be within"),
    (("--error-rule", "*:*:403:x"), "RATE a number"),
    (("--error-rule", "*:*:500:1:SERVICE_DISABLED"), "only allowed with status 401 or 403"),
    (("--error-rule", "*:*:403:1:FAILED_PRECONDITION"), "reason for 403 must be one of"),
    (("--error-rule", "*:Bad Project:403"), "project must be"),
    (("--error-rule", "*:p/US:403"), "location must be"),
    (("--error-rule", '{"status": 403, "colour": 1}'), "unknown key"),
    (("--late-create-rate", "1.5"), "late_create_rate"),
    (("--late-create-delay-s", "-1"), "late_create_delay_s"),
    (("--late-create-hold-s", "inf"), "late_create_hold_s"),
    (("--list-lag-s", "-0.5"), "list_lag_s"),
    (("--malformed-rate", "2"), "malformed_rate"),
    (("--truncated-rate", "-1"), "truncated_rate"),
])
def test_bad_new_fault_flags_are_refused(argv: tuple[str, ...], match: str) -> None:
    """Each bad value of a new flag raises ValueError naming what is wrong."""
    with pytest.raises(ValueError, match=re.escape(match)):
        config_from_args(parse(*argv))


def test_emulator_help_lists_the_fault_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """`tuningd emulator --help` documents every fault flag and the error-rule syntax."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["emulator", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--late-create-rate", "--late-create-delay-s", "--late-create-hold-s",
                 "--list-lag-s", "--error-rule", "--malformed-rate", "--truncated-rate",
                 "--error-rate", "--drop-rate", "--lost-reply-rate", "--latency"):
        assert flag in out, flag
    unwrapped = "".join(out.split())  # argparse wraps long help lines anywhere
    assert "METHOD:PROJECT[/LOCATION]:STATUS[:RATE[:REASON_OR_NAME]]" in unwrapped
    assert "create:my-proj:403" in unwrapped and "SERVICE_DISABLED" in unwrapped
