"""Acceptance: a real Prometheus scrapes a real daemon (and emulator); every panel has data."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Processes, job_body, processes
from prom import Prometheus, find_prometheus, value_is

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "tuningd.rules.yml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "tuningd.json"

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Processes, Prometheus]]:
    if find_prometheus() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus missing in CI (run .ci/install-ops.sh)")
        pytest.skip("prometheus not installed")
    tmp = tmp_path_factory.mktemp("daemon-prom")
    rules = tmp / "tuningd.rules.yml"
    rules.write_text(RULES.read_text().replace("interval: 1m", "interval: 1s"))
    prom = Prometheus(tmp / "prometheus", rule_files=[rules])
    with processes(tmp) as procs:
        prom.start()
        try:
            yield procs, prom
        finally:
            prom.stop()


def substitute(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "1m")
        .replace('"$job"', '"tuningd"')
        .replace('"$instance"', '".*"')
    )


def panel_queries() -> list[tuple[str, str]]:
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [
        (f"{p['title']}/{t['refId']}", t["expr"])
        for p in dash["panels"]
        for t in p.get("targets", [])
    ]


def test_prometheus_scrapes_the_daemon_and_every_panel_has_data(
    stack: tuple[Processes, Prometheus],
) -> None:
    """A real Prometheus scraping a working daemon sees a healthy target, gets data for every
    dashboard panel, evaluates every rule cleanly and fires no critical alert."""
    procs, prom = stack
    emu = procs.emulator(job_seconds=2.0, pending_seconds=0.2, max_concurrent=4)
    # One slot, so later jobs wait in the local queue (backlog panels need a queued job).
    daemon = procs.daemon(emu.url, {"limits": {"max_active": 1}})
    target = daemon.url.removeprefix("http://")
    prom.set_targets("tuningd", [target])
    prom.wait_for('up{job="tuningd"} == 1', value_is(lambda v: v == 1), timeout=60)

    [t] = [t for t in prom.targets() if t["labels"].get("job") == "tuningd"]
    assert t["health"] == "up" and t["lastError"] == "", t
    states = {r["metric"]["state"] for r in prom.query('tuningd_jobs{job="tuningd"}')}
    assert len(states) == 8, states
    assert prom.query('{job="tuningd", __name__=~".+_created"}') == []

    # Phase 1: one job runs to the end (run time, queue wait, outcomes, detection delay).
    daemon.submit(job_body("prom-first"))
    prom.wait_for('tuningd_jobs{job="tuningd", state="succeeded"} >= 1', timeout=60)
    # Phase 2: transient 503s on polls (error panels) and a backlog behind the single slot.
    emu.set_faults({"error_rate": {"get": 0.3, "list": 0.3}})
    for i in range(4):
        daemon.submit(job_body(f"prom-backlog-{i}"))
    prom.wait_for('tuningd_jobs{job="tuningd", state="queued"} >= 1', timeout=30)
    prom.wait_for('tuningd_vertex_requests_total{job="tuningd", code="503"}', timeout=60)

    empty = []
    for panel, expr in panel_queries():
        query = substitute(expr)
        assert "$" not in query, query
        try:
            prom.wait_for(query, timeout=15)
        except Exception as exc:  # collect all, report once
            empty.append((panel, query, str(exc).splitlines()[0]))
    assert empty == [], empty

    # The rules evaluate without errors against the real daemon's series.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        bad = [(r["name"], r.get("lastError")) for r in prom.rules() if r.get("health") != "ok"]
        if not bad:
            break
        time.sleep(0.25)
    assert bad == []
    # A healthy daemon with flaky polls fires nothing that pages (Vertex errors need 15 min).
    firing = prom.query('ALERTS{alertstate="firing", severity="critical"}')
    assert firing == [], firing
