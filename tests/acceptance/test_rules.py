"""Prometheus rules: promtool check/test pass, and every alert has firing and quiet test cases."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "config" / "prometheus"
RULES = PROM_DIR / "tuningd.rules.yml"
TESTS = PROM_DIR / "tuningd.rules.test.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing in CI (run .ci/install-ops.sh)")
        pytest.skip("promtool not installed")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=300, cwd=PROM_DIR
    )


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts the alerting and recording rules file."""
    proc = run("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_test_rules() -> None:
    """The rules' unit tests in tuningd.rules.test.yml pass under `promtool test rules`."""
    proc = run("test", "rules", str(TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_check_config() -> None:
    """`promtool check config` accepts the shipped prometheus.yml."""
    proc = run("check", "config", str(PROM_DIR / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """Every alert in the rules file has both a firing and a not-firing case in the rules' test
    file, and no case names an unknown alert."""
    # The files are ours and regular, so a line scan is enough (no YAML library needed).
    alerts = set(re.findall(r"^\s*- alert: (\w+)\s*$", RULES.read_text(), re.M))
    assert len(alerts) >= 14
    text = TESTS.read_text()
    firing: set[str] = set()
    quiet: set[str] = set()
    for m in re.finditer(r"alertname: (\w+)\n\s*exp_alerts:(.*)", text):
        (quiet if m.group(2).strip() == "[]" else firing).add(m.group(1))
    assert alerts - firing == set(), "alerts without a firing test case"
    assert alerts - quiet == set(), "alerts without a not-firing test case"
    assert firing | quiet <= alerts, "test cases for unknown alerts"


def test_alerts_have_severity_summary_and_a_runbook_section() -> None:
    """Every alert has a critical or warning severity, a summary, a description and a runbook link
    to its own section of docs/operations.md."""
    rules = RULES.read_text()
    docs = (ROOT / "docs" / "operations.md").read_text().lower()
    blocks = re.split(r"^\s*- alert: ", rules, flags=re.M)[1:]
    for block in blocks:
        name = block.split("\n", 1)[0].strip()
        assert re.search(r"severity: (critical|warning)", block), name
        assert "summary:" in block and "description:" in block, name
        assert f"docs/operations.md#{name.lower()}" in block, name
        assert f"### {name.lower()}" in docs, f"{name} has no runbook section in operations.md"
