"""Grafana dashboard and provisioning files, linted as data (no Grafana server is installable)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "tuningd.json"
PROVISIONING = ROOT / "grafana" / "provisioning"
DS_REF = "${datasource}"

# Metrics the issue requires panels for; each must appear in at least one query.
REQUIRED_METRICS = (
    "tuningd_jobs",
    "tuningd_active_jobs",
    "tuningd_active_limit",
    "tuningd_oldest_queued_job_created_timestamp_seconds",
    "tuningd_job_queue_wait_seconds_bucket",
    "tuningd_job_run_duration_seconds_bucket",
    "tuningd_job_transitions_total",
    "tuningd_vertex_requests_total",
    "tuningd_job_detection_delay_seconds_bucket",
    "tuningd_submit_reconciliations_total",
    # Create breaker, sweep and store (issue 7).
    "tuningd_creates_paused",
    "tuningd_create_pauses_total",
    "tuningd_sweep_findings_total",
    "tuningd_sweep_cancels_total",
    "tuningd_unowned_remote_jobs",
    "tuningd_last_sweep_timestamp_seconds",
    "tuningd_store_errors_total",
    "tuningd_unknown_create_outcomes_total",
)


@pytest.fixture(scope="module")
def dash() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))  # collapsed rows nest panels


def exprs(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in all_panels(dash["panels"]) for t in p.get("targets", [])]


def test_identity_is_pinned(dash: dict[str, Any]) -> None:
    """The dashboard keeps uid tuningd-overview, a null id, schemaVersion 39 and no __inputs or
    DS_PROMETHEUS import placeholders."""
    assert dash["uid"] == "tuningd-overview"
    assert dash["id"] is None
    assert dash["schemaVersion"] == 39
    assert "__inputs" not in dash  # breaks file provisioning
    assert "DS_PROMETHEUS" not in DASHBOARD.read_text()


def test_panel_ids_unique_and_grid_within_24_columns(dash: dict[str, Any]) -> None:
    """Panel ids are unique and every panel lies within the 24-column grid
    without overlapping another."""
    panels = list(all_panels(dash["panels"]))
    assert len(panels) >= 12
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["h"] > 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


def test_every_panel_and_target_uses_the_datasource_variable(dash: dict[str, Any]) -> None:
    """Every non-row panel and each of its targets use the ${datasource} Prometheus variable
    and have a non-empty query."""
    for p in all_panels(dash["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": DS_REF}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": DS_REF}, p["title"]
            assert t["expr"].strip(), p["title"]


def test_every_range_function_uses_rate_interval(dash: dict[str, Any]) -> None:
    """Every rate, irate and increase in a panel query takes $__rate_interval as its range."""
    found = 0
    for expr in exprs(dash):
        for m in re.finditer(r"\b(rate|irate|increase)\(", expr):
            found += 1
            # The range selector of this call is the first [...] after it.
            rest = expr[m.end() :]
            window = re.search(r"\[([^\]]+)\]", rest)
            assert window is not None, expr
            assert window.group(1) == "$__rate_interval", expr
    assert found >= 8


def test_every_query_is_scoped_to_job_and_instance(dash: dict[str, Any]) -> None:
    """Every series selector in a panel query filters on the $job and $instance variables."""
    for expr in exprs(dash):
        for selector in re.findall(r"\b[a-z_:]+\{([^}]*)\}", expr):
            assert 'job=~"$job"' in selector and 'instance=~"$instance"' in selector, expr


def test_variables(dash: dict[str, Any]) -> None:
    """The dashboard has a Prometheus datasource variable and job and instance variables read
    from tuningd_build_info labels."""
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= set(variables)
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("job", "instance"):
        v = variables[name]
        assert v["type"] == "query"
        assert v["datasource"]["uid"] == DS_REF
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        assert query.startswith("label_values(tuningd_build_info"), query
        assert query.rstrip(")").endswith(name), query


def test_required_panels_are_there(dash: dict[str, Any]) -> None:
    """Every required metric appears in a panel query, there is a heatmap and a quantile, and ages
    computed from timestamp gauges ignore a gauge at 0."""
    joined = "\n".join(exprs(dash))
    for metric in REQUIRED_METRICS:
        assert metric in joined, metric
    kinds = {p["type"] for p in all_panels(dash["panels"])}
    assert "heatmap" in kinds
    assert "histogram_quantile(" in joined
    # Ages must not show 55 years when a timestamp gauge is 0 (nothing queued, never swept).
    for expr in exprs(dash):
        if "time() - " in expr and "_timestamp_seconds" in expr:
            assert "_seconds{" in expr and "} > 0)" in expr, expr


def test_provisioning_files() -> None:
    """The datasource and dashboard provisioning files have the expected keys, and timeInterval
    equals Prometheus's 15 s scrape interval."""
    ds = (PROVISIONING / "datasources" / "tuningd.yaml").read_text()
    assert re.search(r"^apiVersion: 1$", ds, re.M)
    assert re.search(r"^\s+type: prometheus$", ds, re.M)
    assert re.search(r"^\s+timeInterval: 15s$", ds, re.M)
    scrape = (ROOT / "config" / "prometheus" / "prometheus.yml").read_text()
    assert re.search(r"scrape_interval: 15s", scrape), "timeInterval must equal scrape_interval"
    boards = (PROVISIONING / "dashboards" / "tuningd.yaml").read_text()
    assert re.search(r"^apiVersion: 1$", boards, re.M)
    assert re.search(r"^\s+type: file$", boards, re.M)
    assert re.search(r"^\s+path: /\S+$", boards, re.M)
