"""Every Prometheus metric of tuningd, defined in one place on an injected registry."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import prometheus_client
from aiohttp import web
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.aiohttp import make_aiohttp_handler

from tuningd import __version__
from tuningd.core.errors import Code
from tuningd.core.model import LocalState

# Tuning jobs last minutes to days, so buckets must reach 48 h or quantiles saturate.
DURATION_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 57600, 86400, 172800,
)  # fmt: skip
# Vertex REST calls take milliseconds to tens of seconds (list pages, slow 5xx, timeouts).
REQUEST_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip

RECONCILIATION_RESULTS: tuple[str, ...] = ("found", "absent", "error", "duplicate", "orphan")
TERMINAL: tuple[LocalState, ...] = (LocalState.SUCCEEDED, LocalState.FAILED, LocalState.CANCELLED)
VERTEX_METHODS: tuple[str, ...] = ("create", "get", "list", "cancel")
# Project-wide create errors that open the create breaker of a (project, location).
CREATE_PAUSE_STATUSES: tuple[str, ...] = (
    "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "FAILED_PRECONDITION",
)  # fmt: skip
SWEEP_FINDING_KINDS: tuple[str, ...] = ("adopted", "duplicate", "late", "unknown")
SWEEP_CANCEL_RESULTS: tuple[str, ...] = ("sent", "failed")
STORE_OPERATIONS: tuple[str, ...] = ("write", "read")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_registry() -> CollectorRegistry:
    """A fresh registry with the process, platform and gc collectors that only the default has."""
    # _created series double the series count in Prometheus 2.42 and nobody queries them.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """aiohttp handler for GET /metrics: OpenMetrics or classic text, by the Accept header."""
    return make_aiohttp_handler(registry)


class Metrics:
    """The metrics the engine, the API and the app update, with one method per fact."""

    def __init__(self, registry: CollectorRegistry, version: str = __version__) -> None:
        self.registry = registry
        r = registry
        self.build_info = Gauge(
            "tuningd_build_info", "Build information; value is always 1.", ["version"], registry=r
        )
        self.build_info.labels(version=version).set(1)
        self.start_time = Gauge(
            "tuningd_start_time_seconds",
            "Unix time the daemon started (process start can predate config/recovery).",
            registry=r,
        )
        self.start_time.set(time.time())
        self.jobs = Gauge("tuningd_jobs", "Jobs per local state.", ["state"], registry=r)
        self._job_children: dict[LocalState, Gauge] = {}
        self.transitions = Counter(
            "tuningd_job_transitions_total",
            "Job state transitions.",
            ["from_state", "to_state"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "tuningd_job_queue_wait_seconds",
            "Time from acceptance to creation on Vertex.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.run_duration = Histogram(
            "tuningd_job_run_duration_seconds",
            "Vertex startTime to endTime of finished jobs, by terminal state.",
            ["state"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.job_duration = Histogram(
            "tuningd_job_duration_seconds",
            "Time from acceptance to a terminal state, by terminal state.",
            ["state"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.detection_delay = Histogram(
            "tuningd_job_detection_delay_seconds",
            "Time from a remote change (updateTime/endTime) until tuningd noticed it.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.vertex_requests = Counter(
            "tuningd_vertex_requests_total",
            "Vertex API requests by method and result code (HTTP status or error class).",
            ["method", "code"],
            registry=r,
        )
        self.vertex_duration = Histogram(
            "tuningd_vertex_request_duration_seconds",
            "Vertex API request latency.",
            ["method"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.oldest_queued = Gauge(
            "tuningd_oldest_queued_job_created_timestamp_seconds",
            "Acceptance time of the oldest queued job; 0 when none is queued.",
            registry=r,
        )
        self.oldest_running = Gauge(
            "tuningd_oldest_running_job_start_timestamp_seconds",
            "Start time of the longest-running job (Vertex startTime); 0 when none runs.",
            registry=r,
        )
        self.active_limit = Gauge(
            "tuningd_active_limit",
            "Effective limit on active jobs per scope (shrinks after 429s).",
            ["scope"],
            registry=r,
        )
        self.active_jobs = Gauge(
            "tuningd_active_jobs", "Active jobs per scope.", ["scope"], registry=r
        )
        self.reconciliations = Counter(
            "tuningd_submit_reconciliations_total",
            "Outcomes of reconciling a submission whose result was unknown.",
            ["result"],
            registry=r,
        )
        self.last_poll = Gauge(
            "tuningd_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful Vertex poll; 0 before the first one.",
            registry=r,
        )
        self.api_requests = Counter(
            "tuningd_api_requests_total",
            "Control API requests by method, route template and HTTP status.",
            ["method", "route", "code"],
            registry=r,
        )
        self._api_children: dict[tuple[str, str, str], Counter] = {}
        self.loop_iterations = Counter(
            "tuningd_engine_loop_iterations_total", "Engine loop iterations.", registry=r
        )
        # A round should cost the jobs that can act, whatever the queue: these buckets show
        # a round that starts walking the queue long before it becomes an outage.
        self.loop_round = Histogram(
            "tuningd_engine_loop_round_seconds",
            "CPU-bound time of one planning round (plan, start actions, gauges).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self._init_reliability(r)
        self._leading = False
        self._precreate()

    def _init_reliability(self, r: CollectorRegistry) -> None:
        # Create breaker, remote sweep, store and unknown-outcome metrics.
        self.creates_paused = Gauge(
            "tuningd_creates_paused",
            "1 while creates to a project/location are paused by the breaker (open or "
            "probing), 0 once it closed.",
            ["project", "location"],
            registry=r,
        )
        self.create_pauses = Counter(
            "tuningd_create_pauses_total",
            "Create breaker openings (re-openings after a failed probe included), by the "
            "canonical status that tripped it.",
            ["status"],
            registry=r,
        )
        self.sweep_findings = Counter(
            "tuningd_sweep_findings_total",
            "Managed Vertex jobs the sweep found outside a local job's tracking: adopted, "
            "duplicate, late or unknown.",
            ["kind"],
            registry=r,
        )
        self.sweep_cancels = Counter(
            "tuningd_sweep_cancels_total",
            "Cancels the sweep sent to Vertex for unowned jobs, by result (sent or failed).",
            ["result"],
            registry=r,
        )
        self.unowned_remote_jobs = Gauge(
            "tuningd_unowned_remote_jobs",
            "Active managed Vertex jobs at the last sweep of a project/location that no "
            "tracked local job owns.",
            ["project", "location"],
            registry=r,
        )
        self.last_sweep = Gauge(
            "tuningd_last_sweep_timestamp_seconds",
            "Unix time of the last completed sweep of managed Vertex jobs; 0 before the first.",
            registry=r,
        )
        self.store_errors = Counter(
            "tuningd_store_errors_total",
            "Failed database operations (disk full, read-only or locked database), by "
            "operation (write or read).",
            ["operation"],
            registry=r,
        )
        self.unknown_create_outcomes = Counter(
            "tuningd_unknown_create_outcomes_total",
            "Creates whose outcome was unknown (timeout, connection reset, 5xx) and that "
            "must be reconciled.",
            registry=r,
        )
        self.store_size = Gauge(
            "tuningd_store_size_bytes",
            "What the job store takes on disk (SQLite file pages, PostgreSQL database size), "
            "as of the last retention pass.",
            registry=r,
        )
        self.jobs_pruned = Counter(
            "tuningd_jobs_pruned_total",
            "Ended jobs deleted with their history after store.retention_days.",
            registry=r,
        )
        self.leader = Gauge(
            "tuningd_leader",
            "1 while this instance runs the engine (the leader of the instances sharing the "
            "store, or a single instance on SQLite), 0 on a standby.",
            registry=r,
        )
        self.leader_changes = Counter(
            "tuningd_leader_changes_total",
            "Times this instance became or stopped being the leader.",
            registry=r,
        )

    def _precreate(self) -> None:
        # Series that exist from start-up make rate() and absent-free alerts work before any event.
        for state in LocalState:
            self.jobs.labels(state=state.value).set(0)
        for state in TERMINAL:
            self.run_duration.labels(state=state.value)
            self.job_duration.labels(state=state.value)
        for method in VERTEX_METHODS:
            self.vertex_duration.labels(method=method)
        for result in RECONCILIATION_RESULTS:
            self.reconciliations.labels(result=result)
        self.active_limit.labels(scope="global")
        self.active_jobs.labels(scope="global")
        for status in CREATE_PAUSE_STATUSES:
            self.create_pauses.labels(status=status)
        for kind in SWEEP_FINDING_KINDS:
            self.sweep_findings.labels(kind=kind)
        for result in SWEEP_CANCEL_RESULTS:
            self.sweep_cancels.labels(result=result)
        for operation in STORE_OPERATIONS:
            self.store_errors.labels(operation=operation)

    def set_start_time(self, ts: float) -> None:
        """Override the construction time (e.g. with the time the app began starting)."""
        self.start_time.set(ts)

    def set_job_counts(self, counts: Mapping[LocalState, int]) -> None:
        """Set every state's count; states missing from `counts` are 0."""
        for state in LocalState:
            self.jobs.labels(state=state.value).set(counts.get(state, 0))

    def set_job_count(self, state: LocalState, count: int) -> None:
        """Set one state's count (a create changes the queued count alone)."""
        child = self._job_children.get(state)
        if child is None:  # labels() resolves its arguments per call: kept, as per API route
            child = self._job_children[state] = self.jobs.labels(state=state.value)
        child.set(count)

    def observe_transition(self, from_state: LocalState | str, to_state: LocalState | str) -> None:
        self.transitions.labels(from_state=str(from_state), to_state=str(to_state)).inc()

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait.observe(max(seconds, 0.0))

    def observe_run_duration(self, state: LocalState | str, seconds: float) -> None:
        self.run_duration.labels(state=str(state)).observe(max(seconds, 0.0))

    def observe_job_duration(self, state: LocalState | str, seconds: float) -> None:
        self.job_duration.labels(state=str(state)).observe(max(seconds, 0.0))

    def observe_detection_delay(self, seconds: float) -> None:
        # Clock skew between Vertex and us can make this slightly negative; clamp, don't drop.
        self.detection_delay.observe(max(seconds, 0.0))

    def observe_vertex_request(self, method: str, code: str, seconds: float) -> None:
        """`code`: HTTP status as a string ("200", "429") or an error class ("timeout")."""
        self.vertex_requests.labels(method=method, code=code).inc()
        self.vertex_duration.labels(method=method).observe(max(seconds, 0.0))

    def set_oldest_queued(self, ts_or_0: float) -> None:
        self.oldest_queued.set(ts_or_0)

    def set_oldest_running(self, ts_or_0: float) -> None:
        self.oldest_running.set(ts_or_0)

    def set_active(self, scope: str, active: int, limit: int) -> None:
        self.active_jobs.labels(scope=scope).set(active)
        self.active_limit.labels(scope=scope).set(limit)

    def set_scopes(self, scopes: Iterable[str]) -> None:
        """Drop series of scopes that no longer exist (after a reload removed a limit)."""
        keep = set(scopes)
        for gauge in (self.active_jobs, self.active_limit):
            for labels in list(_label_values(gauge)):
                if labels not in keep:
                    gauge.remove(labels)

    def count_reconciliation(self, result: str) -> None:
        if result not in RECONCILIATION_RESULTS:
            raise ValueError(f"unknown reconciliation result: {result!r}")
        self.reconciliations.labels(result=result).inc()

    def mark_poll_success(self, ts: float) -> None:
        self.last_poll.set(ts)

    def observe_api_request(self, method: str, route: str, code: int | str) -> None:
        """`route` must be the route template (e.g. /v1/.../tuningJobs/{id}), never a raw path."""
        key = (method, route, str(code))
        child = self._api_children.get(key)
        if child is None:
            # labels() resolves its arguments on every call; a request is served in ~0.2 ms,
            # so the child is kept (routes, methods and codes are few: the dict stays small).
            child = self._api_children[key] = self.api_requests.labels(*key)
        child.inc()

    def loop_iteration(self, round_s: float) -> None:
        self.loop_iterations.inc()
        self.loop_round.observe(round_s)

    def set_creates_paused(self, project: str, location: str, paused: bool) -> None:
        """1 while the breaker of this place is open or probing, 0 once it closed."""
        self.creates_paused.labels(project=project, location=location).set(1 if paused else 0)

    def count_create_pause(self, status: str) -> None:
        """A breaker opening; `status` is a Google canonical status name (UNAUTHENTICATED)."""
        # The status comes from the server's error body, so it is not trusted to be canonical:
        # other text counts as UNKNOWN (17 label values at most) and never raises in the engine.
        self.create_pauses.labels(status=status if status in Code.__members__ else "UNKNOWN").inc()

    def count_sweep_finding(self, kind: str) -> None:
        if kind not in SWEEP_FINDING_KINDS:
            raise ValueError(f"unknown sweep finding: {kind!r}")
        self.sweep_findings.labels(kind=kind).inc()

    def count_sweep_cancel(self, ok: bool) -> None:
        self.sweep_cancels.labels(result="sent" if ok else "failed").inc()

    def set_unowned_remote_jobs(self, project: str, location: str, count: int) -> None:
        self.unowned_remote_jobs.labels(project=project, location=location).set(count)

    def mark_sweep(self, now: float) -> None:
        self.last_sweep.set(now)

    def count_store_error(self, operation: str) -> None:
        if operation not in STORE_OPERATIONS:
            raise ValueError(f"unknown store operation: {operation!r}")
        self.store_errors.labels(operation=operation).inc()

    def set_leader(self, leading: bool) -> None:
        """This instance took (True) or lost (False) the engine's lease."""
        if self._leading != leading:
            self.leader_changes.inc()
        self._leading = leading
        self.leader.set(1 if leading else 0)

    def count_unknown_create_outcome(self) -> None:
        self.unknown_create_outcomes.inc()

    def set_store_size(self, size_bytes: int) -> None:
        self.store_size.set(size_bytes)

    def count_pruned(self, jobs: int) -> None:
        self.jobs_pruned.inc(jobs)


def _label_values(gauge: Gauge) -> Iterable[str]:
    # prometheus_client has no public API to list children; collect() gives the label sets.
    for family in gauge.collect():
        for sample in family.samples:
            value = sample.labels.get("scope")
            if value is not None:
                yield value
