"""systemd unit: `verify` prints nothing and the security exposure stays at most 2.0."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "tuningd.service"
INSTALLED_PATH = "/usr/local/bin/tuningd"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze missing in CI (run .ci/install-ops.sh)")
        pytest.skip("systemd-analyze not installed")
    return path


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    # verify insists that ExecStart's binary exists here; the real one is only on servers.
    binary = shutil.which("tuningd") or sys.executable
    text = UNIT.read_text()
    assert INSTALLED_PATH in text
    copy = tmp_path / "tuningd.service"
    copy.write_text(text.replace(INSTALLED_PATH, binary))
    return copy


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        [systemd_analyze(), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


def test_verify_prints_nothing(unit_copy: Path) -> None:
    """`systemd-analyze verify` accepts the unit without printing any warning."""
    # verify exits 0 on unknown keys and bad values, so any output at all is a failure.
    proc = run("verify", "--man=no", str(unit_copy), cwd=unit_copy.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr


def test_security_exposure_at_most_2(unit_copy: Path) -> None:
    """`systemd-analyze security` rates the unit's overall exposure at 2.0 or lower."""
    proc = run("security", "--offline=true", "--threshold=20", str(unit_copy), cwd=unit_copy.parent)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    m = re.search(r"Overall exposure level for tuningd\.service: (\d+\.\d+)", out)
    assert m is not None, out
    assert float(m.group(1)) <= 2.0, out


def sections() -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    current = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            out[current] = {}
            continue
        key, _, value = line.partition("=")
        out[current].setdefault(key, []).append(value)
    return out


def test_unit_contract() -> None:
    """What the daemon's code relies on; runs without systemd too."""
    s = sections()
    unit, svc = s["Unit"], s["Service"]
    assert "StartLimitIntervalSec" in unit and "StartLimitBurst" in unit
    assert "StartLimitIntervalSec" not in svc and "StartLimitBurst" not in svc
    assert svc["Type"] == ["notify"]
    assert svc["NotifyAccess"] == ["main"]
    assert svc["WatchdogSec"] == ["30"]
    assert svc["Restart"] == ["on-failure"]
    assert svc["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert svc["ExecStart"][0].startswith(INSTALLED_PATH + " serve")
    assert svc["DynamicUser"] == ["yes"]
    for key in ("StateDirectory", "ConfigurationDirectory", "RuntimeDirectory"):
        assert svc[key] == ["tuningd"], key
    assert svc["LoadCredential"] == ["vertex-key.json:/etc/tuningd/vertex-key.json"]
    assert "GOOGLE_APPLICATION_CREDENTIALS=%d/vertex-key.json" in svc["Environment"]
    assert "ProcSubset" not in svc  # empties the process collector's metrics
    assert svc["CapabilityBoundingSet"] == [""]
    assert svc["UMask"] == ["0077"]
    for key in (
        "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateUsers", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
        "ProtectHostname", "RestrictNamespaces", "RestrictRealtime", "LockPersonality",
        "MemoryDenyWriteExecute",
    ):  # fmt: skip
        assert svc.get(key) == ["yes"], key
    assert svc["ProtectProc"] == ["invisible"]
    assert svc["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert svc["SystemCallArchitectures"] == ["native"]
    assert "@system-service" in svc["SystemCallFilter"]
