"""A real Prometheus scrapes the /metrics handler, loads the rules and runs each panel query."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prom import Prometheus, find_prometheus, value_is

from tuningd.adapters.metrics import Metrics, build_registry, metrics_handler
from tuningd.core.model import LocalState

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "tuningd.rules.yml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "tuningd.json"

pytestmark = pytest.mark.acceptance


class MetricsServer:
    """The /metrics endpoint on its own thread and loop, as the daemon serves it on :8470.

    Its own loop keeps it scrapeable while the test thread blocks in Prometheus queries.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="metrics-server", daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/metrics", metrics_handler(self.metrics.registry))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "metrics server did not start"

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def exercise(m: Metrics) -> None:
    now = time.time()
    m.set_job_counts({LocalState.QUEUED: 2, LocalState.RUNNING: 1, LocalState.SUCCEEDED: 4})
    m.observe_transition(LocalState.QUEUED, LocalState.SUBMITTING)
    m.observe_transition(LocalState.RUNNING, LocalState.SUCCEEDED)
    m.observe_queue_wait(30)
    m.observe_run_duration(LocalState.SUCCEEDED, 5400)
    m.observe_job_duration(LocalState.SUCCEEDED, 6000)
    m.observe_detection_delay(12)
    m.observe_vertex_request("create", "200", 0.4)
    m.observe_vertex_request("get", "200", 0.05)
    m.observe_vertex_request("get", "429", 0.02)
    m.set_oldest_queued(now - 3600)
    m.set_oldest_running(now - 7200)
    m.set_active("global", 1, 1)
    m.set_active("location:us-central1", 1, 3)
    m.count_reconciliation("found")
    m.mark_poll_success(now)
    m.observe_api_request("GET", "/healthz", 200)
    m.loop_iteration(0.0004)
    # A daemon that has swept once and never paused a place: the per-place gauges stay unset,
    # so the panels must show data from their fallbacks and the pre-initialised counters.
    m.mark_sweep(now)


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    m = Metrics(build_registry())
    exercise(m)
    return m


@pytest.fixture(scope="module")
def server(metrics: Metrics) -> Iterator[MetricsServer]:
    s = MetricsServer(metrics)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory, server: MetricsServer) -> Iterator[Prometheus]:
    if find_prometheus() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus missing in CI (run .ci/install-ops.sh)")
        pytest.skip("prometheus not installed")
    work = tmp_path_factory.mktemp("prometheus")
    # Evaluate the 1m recording group every second so the test needs not wait a minute.
    rules = work / "tuningd.rules.yml"
    rules.write_text(RULES.read_text().replace("interval: 1m", "interval: 1s"))
    p = Prometheus(work, rule_files=[rules])
    p.start()
    try:
        p.set_targets("tuningd", [f"127.0.0.1:{server.port}"])
        p.wait_for('up{job="tuningd"} == 1', value_is(lambda v: v == 1), timeout=60)
        # rate() needs two samples of every series.
        p.wait_for('count_over_time(up{job="tuningd"}[1m]) >= 3', timeout=30)
        yield p
    finally:
        p.stop()


def test_target_is_healthy(prom: Prometheus) -> None:
    """Prometheus scrapes the /metrics handler with the target up and no scrape error."""
    [target] = [t for t in prom.targets() if t["labels"].get("job") == "tuningd"]
    assert target["health"] == "up", target
    assert target["lastError"] == "", target


def test_series_as_prometheus_stores_them(prom: Prometheus) -> None:
    """Prometheus stores every required tuningd series, the process metrics and one tuningd_jobs
    series per local state, and no _created, exported_job or exported_instance series."""
    names = {
        r["metric"]["__name__"]
        for r in prom.query('count by (__name__) ({job="tuningd", __name__=~"tuningd_.+"})')
    }
    for required in (
        "tuningd_jobs",
        "tuningd_job_queue_wait_seconds_bucket",
        "tuningd_job_run_duration_seconds_bucket",
        "tuningd_job_duration_seconds_bucket",
        "tuningd_job_detection_delay_seconds_bucket",
        "tuningd_vertex_requests_total",
        "tuningd_vertex_request_duration_seconds_bucket",
        "tuningd_oldest_queued_job_created_timestamp_seconds",
        "tuningd_oldest_running_job_start_timestamp_seconds",
        "tuningd_active_limit",
        "tuningd_active_jobs",
        "tuningd_submit_reconciliations_total",
        "tuningd_last_successful_poll_timestamp_seconds",
        "tuningd_build_info",
        "tuningd_job_transitions_total",
        "tuningd_api_requests_total",
        "tuningd_engine_loop_iterations_total",
        "tuningd_engine_loop_round_seconds_bucket",
        "tuningd_create_pauses_total",
        "tuningd_sweep_findings_total",
        "tuningd_sweep_cancels_total",
        "tuningd_last_sweep_timestamp_seconds",
        "tuningd_store_errors_total",
        "tuningd_unknown_create_outcomes_total",
    ):
        assert required in names, required
    assert prom.query('process_start_time_seconds{job="tuningd"}'), "process collector missing"
    assert prom.query('{job="tuningd", __name__=~".+_created"}') == []
    assert prom.query('{job="tuningd", exported_job!=""}') == []
    assert prom.query('{job="tuningd", exported_instance!=""}') == []
    states = {r["metric"]["state"] for r in prom.query('tuningd_jobs{job="tuningd"}')}
    assert states == {s.value for s in LocalState}


def panel_queries() -> list[tuple[str, str]]:
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']}/{target['refId']}", target["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", q)
            assert m, q
            out.append((f"${var['name']}", f"group by ({m.group(2)}) ({m.group(1)})"))
    return out


def substitute(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "1m")
        .replace('"$job"', '"tuningd"')
        .replace('"$instance"', '".*"')
    )


@pytest.mark.parametrize(("panel", "expr"), panel_queries(), ids=lambda v: str(v)[:60])
def test_every_dashboard_query_returns_data(prom: Prometheus, panel: str, expr: str) -> None:
    """Each dashboard panel and variable query, with Grafana's variables substituted,
    returns data from Prometheus."""
    query = substitute(expr)
    assert "$" not in query, query
    result = prom.wait_for(query, timeout=20)
    assert result, (panel, query)


def test_rules_load_and_evaluate_cleanly(prom: Prometheus) -> None:
    """Every rule Prometheus loads evaluates with health ok, and the recording rules produce
    series from the scraped metrics."""
    def all_ok() -> bool:
        rules = prom.rules()
        return len(rules) >= 15 and all(r.get("health") == "ok" for r in rules)

    deadline = time.monotonic() + 30
    while not all_ok() and time.monotonic() < deadline:
        time.sleep(0.25)
    bad = [(r["name"], r.get("health"), r.get("lastError")) for r in prom.rules()
           if r.get("health") != "ok"]  # fmt: skip
    assert bad == []
    # Recording rules produce series from the live daemon.
    assert prom.wait_for('job_instance:tuningd_jobs_remote:sum{job="tuningd"}')


def test_quiet_daemon_raises_no_alert_and_an_orphan_pages(
    prom: Prometheus, metrics: Metrics
) -> None:
    """A healthy metrics endpoint fires no alert, and one orphan reconciliation fires
    TuningdReconciliationAnomaly."""
    # The healthy fake daemon fires nothing (pending is fine: some alerts have `for:`).
    firing = prom.query('ALERTS{alertstate="firing"}')
    assert firing == [], firing
    metrics.count_reconciliation("orphan")
    prom.wait_for(
        'ALERTS{alertname="TuningdReconciliationAnomaly", alertstate="firing", result="orphan"}',
        timeout=30,
    )


def test_a_paused_place_replaces_the_panel_fallback_and_alerts_fire(
    prom: Prometheus, metrics: Metrics
) -> None:
    """Once the engine sets a place, per-place panels show it instead of "(none)"; the breaker
    alert goes pending with the place's labels and a store error pages at once."""
    [paused_panel] = [e for t, e in panel_queries() if t == "Creates paused per place/A"]
    metrics.set_creates_paused("proj-a", "us-central1", True)
    metrics.set_unowned_remote_jobs("proj-a", "us-central1", 2)
    places = prom.wait_for(
        substitute(paused_panel),
        lambda r: [x["metric"].get("project") for x in r] == ["proj-a"],
        timeout=30,
    )
    assert places[0]["metric"] == {"project": "proj-a", "location": "us-central1"}
    assert float(places[0]["value"][1]) == 1
    prom.wait_for(
        'ALERTS{alertname="TuningdCreatesPaused", alertstate="pending", project="proj-a",'
        ' location="us-central1"}',
        timeout=30,
    )
    metrics.count_store_error("write")
    prom.wait_for(
        'ALERTS{alertname="TuningdStoreErrors", alertstate="firing", operation="write"}',
        timeout=30,
    )
