"""Hostile clients against a real daemon: silent and slowloris connections, few descriptors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import DaemonProc, Processes, http, job_body, wait_until

FD_LIMIT = 128
SILENT = 200
SLOWLORIS = 20
ATTACK_S = 10.0
PROBE_TIMEOUT_S = 1.0
LOG_LIMIT_BYTES = 1_000_000
ATTACKER = Path(__file__).with_name("hostile_client.py")


def lower_fd_limit(pid: int, limit: int) -> None:
    """prlimit(2) on the running daemon (what util-linux's `prlimit --nofile` does)."""
    try:
        import resource
        prlimit = resource.prlimit
    except (ImportError, AttributeError):
        if os.environ.get("CI") == "true":
            pytest.fail("prlimit(2) is needed in CI (Linux)")
        pytest.skip(f"prlimit(2) is not available on {sys.platform}")
    prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))


def probe(daemon: DaemonProc, n: int, slowest: dict[str, float]) -> list[str]:
    """One /healthz and one create, each allowed PROBE_TIMEOUT_S; the problems, if any."""
    problems = []
    for what, method, url, body in (
        ("healthz", "GET", daemon.url + "/healthz", None),
        ("create", "POST", daemon.collection_url(), job_body(f"hostile-{n}")),
    ):
        t0 = time.monotonic()
        try:
            status = http(method, url, body=body, timeout_s=PROBE_TIMEOUT_S).status
        except OSError as exc:  # timeouts and resets
            problems.append(f"{what} #{n}: {exc!r} after {time.monotonic() - t0:.2f}s")
            continue
        slowest[what] = max(slowest.get(what, 0.0), time.monotonic() - t0)
        if status != 200:
            problems.append(f"{what} #{n}: HTTP {status}")
    return problems


def log_size(daemon: DaemonProc) -> int:
    return sum(p.stat().st_size for p in (daemon.stdout_path, daemon.stderr_path) if p.exists())


def test_hostile_clients_leave_healthz_and_creates_answered(procs: Processes,
                                                            tmp_path: Path) -> None:
    """Under 200 silent and 20 slowloris connections with 128 descriptors, /healthz and creates
    answer 200 within 1 s, the attackers are shed, and the log stays under 1 MB."""
    emu = procs.emulator()
    daemon = procs.daemon(emu.url)
    wait_until(lambda: http("GET", daemon.url + "/healthz", timeout_s=2).status == 200, 30,
               message=lambda: f"daemon to answer\n{daemon.tail()}")
    lower_fd_limit(daemon.pid, FD_LIMIT)
    port = int(daemon.url.rsplit(":", 1)[1])

    problems: list[str] = []
    slowest: dict[str, float] = {}
    probes = 0
    attack = subprocess.Popen(
        [sys.executable, str(ATTACKER), "127.0.0.1", str(port), str(SILENT), str(SLOWLORIS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert attack.stdout is not None
        # The attacker says "open" once every connection is made: the daemon is full by then.
        assert attack.stdout.readline().strip() == "open"
        deadline = time.monotonic() + ATTACK_S
        while time.monotonic() < deadline:
            problems += probe(daemon, probes, slowest)
            probes += 1
            daemon.check_alive()
            time.sleep(0.1)  # pacing, not waiting for a condition
        closed = json.loads(attack.communicate(input="stop\n", timeout=30)[0])
    finally:
        attack.kill()

    assert not problems, f"{len(problems)} of {2 * probes} probes failed: {problems[:10]}"
    # The daemon shed attackers (the flood could not simply park on every descriptor).
    assert closed["silent"] > 0 and closed["slow"] > 0, closed
    assert daemon.stop() == 0, daemon.tail()
    size = log_size(daemon)
    assert size < LOG_LIMIT_BYTES, f"log is {size} bytes:\n{daemon.tail(20)}"
    shed = [r for r in daemon.log_records() if r.get("event") == "server.connections_shed"]
    assert shed and sum(sum(r["counts"].values()) for r in shed) >= SILENT, shed
    print(f"\n{probes} probe pairs, slowest answers (s): {slowest}; attackers closed by the "
          f"daemon: {closed}; log {size} bytes; shed lines: {[r['counts'] for r in shed]}")
