"""The /metrics handler served by a real aiohttp server: names, negotiation, labels, promtool."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tuningd import __version__
from tuningd.adapters.metrics import Metrics, build_registry, metrics_handler
from tuningd.core.model import LocalState

REQUIRED = {
    # name -> type as seen by the classic text parser
    "tuningd_jobs": "gauge",
    "tuningd_job_queue_wait_seconds": "histogram",
    "tuningd_job_run_duration_seconds": "histogram",
    "tuningd_job_duration_seconds": "histogram",
    "tuningd_job_detection_delay_seconds": "histogram",
    "tuningd_vertex_requests": "counter",
    "tuningd_vertex_request_duration_seconds": "histogram",
    "tuningd_oldest_queued_job_created_timestamp_seconds": "gauge",
    "tuningd_oldest_running_job_start_timestamp_seconds": "gauge",
    "tuningd_active_limit": "gauge",
    "tuningd_active_jobs": "gauge",
    "tuningd_submit_reconciliations": "counter",
    "tuningd_last_successful_poll_timestamp_seconds": "gauge",
    "tuningd_build_info": "gauge",
    "tuningd_job_transitions": "counter",
    "tuningd_api_requests": "counter",
    "tuningd_engine_loop_iterations": "counter",
    "tuningd_engine_loop_round_seconds": "histogram",
    "tuningd_start_time_seconds": "gauge",
    "tuningd_create_pauses": "counter",
    "tuningd_sweep_findings": "counter",
    "tuningd_sweep_cancels": "counter",
    "tuningd_last_sweep_timestamp_seconds": "gauge",
    "tuningd_store_errors": "counter",
    "tuningd_unknown_create_outcomes": "counter",
    "process_start_time_seconds": "gauge",
    "process_resident_memory_bytes": "gauge",
    "python_info": "gauge",
    "python_gc_collections": "counter",
}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(build_registry())


@pytest.fixture
async def base_url(metrics: Metrics) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(metrics.registry))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def scrape(base_url: str, accept: str | None = None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url + "/metrics", headers=headers) as resp,
    ):
        assert resp.status == 200
        return resp.headers["Content-Type"], await resp.text()


def exercise(m: Metrics) -> None:
    """Touch every method the engine and API call, as a day of work would."""
    m.set_job_counts({LocalState.QUEUED: 2, LocalState.RUNNING: 1})
    m.observe_transition(LocalState.QUEUED, LocalState.SUBMITTING)
    m.observe_transition(LocalState.RUNNING, LocalState.SUCCEEDED)
    m.observe_queue_wait(12.5)
    m.observe_run_duration(LocalState.SUCCEEDED, 5400)
    m.observe_job_duration(LocalState.SUCCEEDED, 6000)
    m.observe_detection_delay(20)
    m.observe_vertex_request("create", "200", 0.4)
    m.observe_vertex_request("get", "429", 0.1)
    m.set_oldest_queued(1_700_000_000)
    m.set_oldest_running(1_700_000_100)
    m.set_active("global", 1, 1)
    m.set_active("location:us-central1", 1, 3)
    m.set_active("base_model:gemini-2.5-flash", 1, 2)
    m.count_reconciliation("found")
    m.mark_poll_success(1_700_000_200)
    m.observe_api_request("POST", "/v1/projects/{project}/locations/{location}/tuningJobs", 200)
    m.loop_iteration(0.0004)
    m.set_creates_paused("proj-a", "us-central1", True)
    m.count_create_pause("PERMISSION_DENIED")
    m.count_sweep_finding("duplicate")
    m.count_sweep_cancel(ok=True)
    m.set_unowned_remote_jobs("proj-a", "us-central1", 1)
    m.mark_sweep(1_700_000_300)
    m.count_store_error("write")
    m.count_unknown_create_outcome()


def families(text: str) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(fam: Metric, label: str) -> dict[str, float]:
    # No _created samples (disabled), so each sample is the one value of its label set.
    return {s.labels[label]: s.value for s in fam.samples}


async def test_all_names_exist_at_start_up_with_every_state_at_zero(base_url: str) -> None:
    """A fresh registry exposes every required family with its type, tuningd_jobs at 0 for each
    local state, build_info with the version, and a reconciliation series per result."""
    ctype, text = await scrape(base_url, "text/plain")
    assert ctype.startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in REQUIRED.items():
        assert name in fams, name
        assert fams[name].type == kind, (name, fams[name].type)
    jobs = {s.labels["state"]: s.value for s in fams["tuningd_jobs"].samples}
    assert jobs == {s.value: 0.0 for s in LocalState}
    assert [s.labels for s in fams["tuningd_build_info"].samples] == [{"version": __version__}]
    assert fams["tuningd_build_info"].samples[0].value == 1.0
    assert fams["tuningd_oldest_queued_job_created_timestamp_seconds"].samples[0].value == 0
    results = {s.labels["result"] for s in fams["tuningd_submit_reconciliations"].samples}
    assert results == {"found", "absent", "error", "duplicate", "orphan"}


async def test_histogram_buckets_reach_48_hours(base_url: str) -> None:
    """The queue-wait histogram has a 48-hour (172800 s) bucket below +Inf."""
    _, text = await scrape(base_url, "text/plain")
    les = {
        line.split('le="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("tuningd_job_queue_wait_seconds_bucket")
    }
    assert "172800.0" in les and "+Inf" in les


async def test_content_negotiation(base_url: str, metrics: Metrics) -> None:
    """An OpenMetrics Accept (Prometheus's own included) gets OpenMetrics ending in # EOF, while no
    Accept, text/plain or */* gets the classic text format."""
    exercise(metrics)
    ctype, text = await scrape(base_url, "application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")
    assert "# TYPE tuningd_vertex_requests counter" in text
    assert "tuningd_vertex_requests_total{" in text

    # What Prometheus 2.42 sends: OpenMetrics preferred, text as a fallback.
    prom_accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    ctype, _ = await scrape(base_url, prom_accept)
    assert ctype.startswith("application/openmetrics-text")

    for accept in (None, "text/plain", "text/plain;version=0.0.4", "*/*"):
        ctype, text = await scrape(base_url, accept)
        assert ctype.startswith("text/plain"), accept
        assert "# EOF" not in text


async def test_values_after_exercise(base_url: str, metrics: Metrics) -> None:
    """The exercised metric methods show up as the expected sample values, and set_job_counts resets
    the states it does not mention to 0."""
    exercise(metrics)
    _, text = await scrape(base_url, "text/plain")
    assert 'tuningd_jobs{state="queued"} 2.0' in text
    assert 'tuningd_jobs{state="failed"} 0.0' in text
    assert 'tuningd_vertex_requests_total{code="429",method="get"} 1.0' in text
    assert 'tuningd_active_limit{scope="location:us-central1"} 3.0' in text
    assert 'tuningd_job_transitions_total{from_state="running",to_state="succeeded"} 1.0' in text
    assert 'tuningd_job_run_duration_seconds_bucket{le="7200.0",state="succeeded"} 1.0' in text
    assert "tuningd_last_successful_poll_timestamp_seconds 1.7000002e+09" in text
    # set_job_counts resets states that are not mentioned
    metrics.set_job_counts({LocalState.FAILED: 4})
    _, text = await scrape(base_url, "text/plain")
    assert 'tuningd_jobs{state="queued"} 0.0' in text
    assert 'tuningd_jobs{state="failed"} 4.0' in text


async def test_no_job_or_instance_labels_and_no_created_series(
    base_url: str, metrics: Metrics
) -> None:
    """Neither the text nor the OpenMetrics output carries a _created sample
    or a job or instance label."""
    exercise(metrics)
    _, text = await scrape(base_url, "text/plain")
    _, om_text = await scrape(base_url, "application/openmetrics-text; version=1.0.0")
    parsed = [
        *text_string_to_metric_families(text),
        *openmetrics_families(om_text),
    ]
    assert len(parsed) > 20
    for fam in parsed:
        for sample in fam.samples:
            assert not sample.name.endswith("_created"), sample
            assert "job" not in sample.labels and "instance" not in sample.labels, sample


def test_set_scopes_drops_removed_scopes(metrics: Metrics) -> None:
    """set_scopes removes the active-limit series of scopes that are no longer configured."""
    metrics.set_active("global", 0, 1)
    metrics.set_active("location:europe-west4", 0, 2)
    metrics.set_scopes(["global"])
    scopes = {s.labels["scope"] for f in metrics.active_limit.collect() for s in f.samples}
    assert scopes == {"global"}


def test_unknown_reconciliation_result_is_a_bug(metrics: Metrics) -> None:
    """A reconciliation result outside the documented set raises ValueError
    instead of creating a series."""
    with pytest.raises(ValueError):
        metrics.count_reconciliation("maybe")


async def test_reliability_metrics_at_start_up(base_url: str) -> None:
    """Breaker, sweep, store and unknown-outcome series exist at 0 before any event; per-place
    gauges do not exist until the engine sets one (Prometheus must not see invented places)."""
    _, text = await scrape(base_url, "text/plain")
    fams = families(text)
    assert values(fams["tuningd_create_pauses"], "status") == {
        "UNAUTHENTICATED": 0.0, "PERMISSION_DENIED": 0.0, "NOT_FOUND": 0.0,
        "FAILED_PRECONDITION": 0.0,
    }  # fmt: skip
    assert values(fams["tuningd_sweep_findings"], "kind") == {
        "adopted": 0.0, "duplicate": 0.0, "late": 0.0, "unknown": 0.0,
    }  # fmt: skip
    assert values(fams["tuningd_sweep_cancels"], "result") == {"sent": 0.0, "failed": 0.0}
    assert values(fams["tuningd_store_errors"], "operation") == {"write": 0.0, "read": 0.0}
    [outcomes] = fams["tuningd_unknown_create_outcomes"].samples
    assert (outcomes.name, outcomes.labels, outcomes.value) == (
        "tuningd_unknown_create_outcomes_total", {}, 0.0)
    [sweep] = fams["tuningd_last_sweep_timestamp_seconds"].samples
    assert (sweep.labels, sweep.value) == ({}, 0.0)
    for name in ("tuningd_creates_paused", "tuningd_unowned_remote_jobs"):
        assert name in fams and fams[name].type == "gauge", name
        assert fams[name].samples == [], name


async def test_reliability_metrics_help_texts(base_url: str) -> None:
    """Each new family carries a HELP line that says what it counts or shows."""
    _, text = await scrape(base_url, "text/plain")
    helps = {
        line.split(" ", 3)[2]: line.split(" ", 3)[3]
        for line in text.splitlines()
        if line.startswith("# HELP ")
    }
    expected = {
        "tuningd_creates_paused": "paused by the breaker",
        "tuningd_create_pauses_total": "breaker openings",
        "tuningd_sweep_findings_total": "adopted, duplicate, late or unknown",
        "tuningd_sweep_cancels_total": "sent or failed",
        "tuningd_unowned_remote_jobs": "no tracked local job owns",
        "tuningd_last_sweep_timestamp_seconds": "0 before the first",
        "tuningd_store_errors_total": "write or read",
        "tuningd_unknown_create_outcomes_total": "outcome was unknown",
    }
    for name, phrase in expected.items():
        assert phrase.lower() in helps[name].lower(), (name, helps.get(name))


async def test_reliability_metrics_after_events(base_url: str, metrics: Metrics) -> None:
    """Each method moves exactly its series, with the labels the alerts and panels select on."""
    m = metrics
    m.set_creates_paused("proj-a", "us-central1", True)
    m.set_creates_paused("proj-b", "europe-west4", True)
    m.count_create_pause("PERMISSION_DENIED")
    m.count_create_pause("PERMISSION_DENIED")  # a failed probe re-opens it
    m.count_create_pause("NOT_FOUND")
    m.set_creates_paused("proj-b", "europe-west4", False)  # the probe succeeded
    for kind in ("adopted", "late", "late", "unknown"):
        m.count_sweep_finding(kind)
    m.count_sweep_cancel(ok=True)
    m.count_sweep_cancel(ok=True)
    m.count_sweep_cancel(ok=False)
    m.set_unowned_remote_jobs("proj-a", "us-central1", 3)
    m.set_unowned_remote_jobs("proj-a", "us-central1", 2)  # the last sweep wins
    m.set_unowned_remote_jobs("proj-b", "europe-west4", 0)
    m.mark_sweep(1_700_000_400)
    m.count_store_error("write")
    m.count_store_error("write")
    m.count_store_error("read")
    m.count_unknown_create_outcome()

    _, text = await scrape(base_url, "text/plain")
    fams = families(text)
    paused = {(s.labels["project"], s.labels["location"]): s.value
              for s in fams["tuningd_creates_paused"].samples}  # fmt: skip
    assert paused == {("proj-a", "us-central1"): 1.0, ("proj-b", "europe-west4"): 0.0}
    assert values(fams["tuningd_create_pauses"], "status") == {
        "UNAUTHENTICATED": 0.0, "PERMISSION_DENIED": 2.0, "NOT_FOUND": 1.0,
        "FAILED_PRECONDITION": 0.0,
    }  # fmt: skip
    assert values(fams["tuningd_sweep_findings"], "kind") == {
        "adopted": 1.0, "duplicate": 0.0, "late": 2.0, "unknown": 1.0,
    }  # fmt: skip
    assert values(fams["tuningd_sweep_cancels"], "result") == {"sent": 2.0, "failed": 1.0}
    unowned = {(s.labels["project"], s.labels["location"]): s.value
               for s in fams["tuningd_unowned_remote_jobs"].samples}  # fmt: skip
    assert unowned == {("proj-a", "us-central1"): 2.0, ("proj-b", "europe-west4"): 0.0}
    assert fams["tuningd_last_sweep_timestamp_seconds"].samples[0].value == 1_700_000_400
    assert values(fams["tuningd_store_errors"], "operation") == {"write": 2.0, "read": 1.0}
    assert fams["tuningd_unknown_create_outcomes"].samples[0].value == 1.0


def test_create_pause_status_is_canonical_or_unknown(metrics: Metrics) -> None:
    """Another canonical status gets its own series; a server's free text counts as UNKNOWN
    (bounded labels, and a metric never raises into the engine for what a server sent)."""
    metrics.count_create_pause("INVALID_ARGUMENT")
    for odd in ("permission_denied", "403", "Permission denied on resource project p.", ""):
        metrics.count_create_pause(odd)
    counts = {s.labels["status"]: s.value
              for f in metrics.create_pauses.collect() for s in f.samples}  # fmt: skip
    assert counts == {
        "UNAUTHENTICATED": 0.0, "PERMISSION_DENIED": 0.0, "NOT_FOUND": 0.0,
        "FAILED_PRECONDITION": 0.0, "INVALID_ARGUMENT": 1.0, "UNKNOWN": 4.0,
    }  # fmt: skip


def test_unknown_sweep_kind_or_store_operation_is_a_bug(metrics: Metrics) -> None:
    """Label values outside the documented sets raise instead of creating new series."""
    with pytest.raises(ValueError):
        metrics.count_sweep_finding("orphan")
    with pytest.raises(ValueError):
        metrics.count_store_error("delete")


def test_two_registries_do_not_clash() -> None:
    """Two Metrics on separate registries can be built in one process without a
    duplicate registration error."""
    # Tests and an in-process emulator may build several; nothing global may be shared.
    Metrics(build_registry())
    Metrics(build_registry())


async def test_promtool_check_metrics_is_clean(base_url: str, metrics: Metrics) -> None:
    """`promtool check metrics` finds nothing to report in the exercised text exposition."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing in CI (run .ci/install-ops.sh)")
        pytest.skip("promtool not installed")
    exercise(metrics)
    _, text = await scrape(base_url, "text/plain")
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr
