"""systemd unit: `verify` prints nothing once tuningd is pip-installed, the security exposure
stays at most 2.0, and its Documentation= is installed by the documented steps."""

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


@pytest.fixture(scope="module")
def installed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root directory in which `pip install` put tuningd under /usr/local, as on a server,
    with what systemd itself needs there (its own units, and /bin/kill for ExecReload) and the
    unit at /etc/systemd/system."""
    systemd_analyze()
    base = tmp_path_factory.mktemp("installed")
    # Built from a copy, so that the build leaves no build/ or egg-info in the working tree.
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "tuningd", src / "tuningd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    root = base / "root"
    # --ignore-installed: otherwise pip first uninstalls the tuningd of the environment the
    # tests run in (a --root install still counts that one as the installed copy).
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--ignore-installed", "--root", str(root), "--prefix", "/usr/local", str(src)],
        capture_output=True, text=True, timeout=300, cwd=base)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    still = subprocess.run([sys.executable, "-c", "import tuningd"], cwd=base, timeout=60,
                           capture_output=True, text=True)
    assert still.returncode == 0, f"the test environment lost tuningd: {still.stderr}"
    for unit_dir in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(unit_dir).is_dir():
            shutil.copytree(unit_dir, root / unit_dir.lstrip("/"), symlinks=True,
                            dirs_exist_ok=True)
            break
    kill = Path("/bin/kill").resolve()
    (root / "bin").mkdir()
    shutil.copy2(kill, root / "bin" / "kill")
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy2(UNIT, root / "etc/systemd/system/tuningd.service")
    return root


def test_verify_prints_nothing_once_installed(installed_root: Path) -> None:
    """After `pip install --root R --prefix /usr/local`, `systemd-analyze verify --root=R`
    accepts the unit as it is (ExecStart /usr/local/bin/tuningd) without printing anything."""
    assert (installed_root / INSTALLED_PATH.lstrip("/")).is_file()
    unit = installed_root / "etc/systemd/system/tuningd.service"
    # verify exits 0 on unknown keys and bad values, so any output at all is a failure.
    proc = run("verify", "--man=no", f"--root={installed_root}", str(unit), cwd=installed_root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr


def test_verify_complains_while_tuningd_is_not_installed(installed_root: Path,
                                                         tmp_path: Path) -> None:
    """The same check on a root without tuningd names the missing /usr/local/bin/tuningd (what
    docs/operations.md warns of), so the test above really checks the installed entry point."""
    bare = tmp_path / "bare"
    shutil.copytree(installed_root, bare, symlinks=True,
                    ignore=shutil.ignore_patterns("local"))
    proc = run("verify", "--man=no", f"--root={bare}",
               str(bare / "etc/systemd/system/tuningd.service"), cwd=bare)
    assert f"Command {INSTALLED_PATH} is not executable" in proc.stdout + proc.stderr


def test_the_installed_entry_point_runs_the_installed_package(installed_root: Path) -> None:
    """/usr/local/bin/tuningd in the root runs the package pip put there (not the checkout)."""
    site = next((installed_root / "usr/local/lib").glob("python3*/site-packages"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [str(installed_root / INSTALLED_PATH.lstrip("/")), "--version"],
        capture_output=True, text=True, timeout=60, env=env, cwd=installed_root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tuningd ")
    probe = subprocess.run(
        [sys.executable, "-c", "import tuningd.emulator.persist as m; print(m.__file__)"],
        capture_output=True, text=True, timeout=60, env=env, cwd=installed_root)
    assert probe.stdout.startswith(str(site)), probe.stdout + probe.stderr


def test_documentation_points_at_what_the_install_steps_install() -> None:
    """The unit's Documentation= is a file that docs/operations.md's install steps put there,
    from a file that exists in the checkout."""
    (doc,) = sections()["Unit"]["Documentation"]
    assert doc.startswith("file://")
    target = doc.removeprefix("file://")
    operations = (ROOT / "docs" / "operations.md").read_text()
    steps = [line.split() for line in operations.splitlines() if target in line]
    installs = [words for words in steps if words[:2] == ["install", "-Dm644"]]
    assert installs, f"docs/operations.md does not install {target}"
    source = installs[0][-2]
    assert source.endswith("docs/operations.md") and installs[0][-1] == target
    assert (ROOT / "docs" / "operations.md").is_file()


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
