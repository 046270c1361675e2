"""The engine's gauges published once per loop round: active jobs per limit scope, oldest jobs."""

from __future__ import annotations

from collections.abc import Sequence

from tuningd.adapters.metrics import Metrics
from tuningd.core import errors, limits
from tuningd.core.model import Job, LocalState
from tuningd.core.workset import QueueStats
from tuningd.vertex import wire


def scope_label(scope: limits.Scope) -> str:
    """The `scope` label value of a limit scope in metrics."""
    return scope.kind.value if not scope.name else f"{scope.kind.value}:{scope.name}"


def publish_oldest(m: Metrics, active: Sequence[Job], queue: QueueStats) -> None:
    """Backlog age and longest run, once per loop round: from the queue's index and the active
    jobs, never a walk of the queue."""
    m.set_oldest_queued(queue.oldest_created_at or 0.0)
    jobs = active
    starts: list[float] = []
    for job in jobs:
        if job.state is not LocalState.RUNNING:
            continue
        start = (job.remote or {}).get("startTime")
        if isinstance(start, str):
            try:
                starts.append(wire.parse_timestamp(start))
            except errors.TuningdError:
                continue
    m.set_oldest_running(min(starts) if starts else 0.0)


def publish_scopes(m: Metrics, jobs: Sequence[Job], adaptive: limits.AdaptiveLimits,
                   caps: limits.Limits) -> None:
    """Active jobs and the effective limit of every limited scope."""
    counts = limits.active_counts(jobs)
    labels = []
    for scope in {limits.GLOBAL, *counts.keys()}:
        limit = adaptive.effective(scope, caps)
        if limit is None:  # an unlimited scope has no limit series
            continue
        label = scope_label(scope)
        labels.append(label)
        m.set_active(label, counts.get(scope, 0), limit or 0)
    m.set_scopes(labels)
