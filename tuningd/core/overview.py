"""The service-level overview of one instance (status page, `tuningd status`): its values and the
pure steps that build them without walking or sorting the queue per request."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from tuningd.config import SchedulingSettings
from tuningd.core import limits, recovery
from tuningd.core.model import ACTIVE_STATES, Job, LocalState
from tuningd.core.workset import QueueGroup, sort_key

__all__ = ["FAILURES_SHOWN", "FAILURE_WINDOW_S", "QUEUE_SHOWN", "ActiveJob", "InstanceRole",
           "LimitUse", "Overview", "PausedCreates", "QueuedJob", "build", "limit_uses",
           "merged_head", "queue_head", "recent_failures"]

# At most this many queued jobs (the head of the queue) and recent failures are listed.
QUEUE_SHOWN = 50
FAILURES_SHOWN = 20
# A failure is "recent" when the job ended within this window.
FAILURE_WINDOW_S = 24 * 3600.0


class InstanceRole(StrEnum):
    """What this instance is: the only one on its store, or the leader or a standby of several."""

    SINGLE = "single"
    LEADER = "leader"
    STANDBY = "standby"


@dataclass(frozen=True)
class QueuedJob:
    """A queued job and its 1-based place in the submission order."""

    job: Job
    position: int


@dataclass(frozen=True)
class ActiveJob:
    """A submitting, pending, running or cancelling job and how long it has been at it."""

    job: Job
    since: float  # when its first create started (its acceptance if none is recorded)
    elapsed_s: float


@dataclass(frozen=True)
class LimitUse:
    """One concurrency limit in force and how many active jobs count against it."""

    scope: limits.Scope
    active: int
    limit: int
    # The configured cap; above `limit` while create 429s have lowered the cap (adaptive).
    configured: int | None

    @property
    def lowered(self) -> bool:
        return self.configured is None or self.configured != self.limit


@dataclass(frozen=True)
class PausedCreates:
    """Creates to one project and location paused after a project-wide error (the breaker)."""

    project: str
    location: str
    pause: recovery.Pause


@dataclass(frozen=True)
class Overview:
    """Everything the status page and `tuningd status` show, as of `at`."""

    role: InstanceRole
    version: str
    at: float
    counts: Mapping[LocalState, int]
    queue_depth: int
    oldest_queued_at: float | None
    queued: tuple[QueuedJob, ...]  # the head of the queue, at most QUEUE_SHOWN
    active: tuple[ActiveJob, ...]
    recent_failures: tuple[Job, ...]  # newest first, at most FAILURES_SHOWN
    limits: tuple[LimitUse, ...]
    paused: tuple[PausedCreates, ...]
    last_poll_at: float | None


def limit_uses(active: Iterable[Job], configured: limits.Limits,
               adaptive: limits.AdaptiveLimits | None = None) -> tuple[LimitUse, ...]:
    """Every limited scope (global, each configured location and base model, each scope whose cap
    create 429s lowered) with its active count; unlimited scopes are left out."""
    learned = adaptive or limits.AdaptiveLimits()
    counts = limits.active_counts(active)
    scopes = {limits.GLOBAL, *learned.caps}
    scopes.update(limits.Scope(limits.ScopeKind.LOCATION, name)
                  for name in configured.per_location)
    scopes.update(limits.Scope(limits.ScopeKind.BASE_MODEL, name)
                  for name in configured.per_base_model)
    order = {limits.ScopeKind.GLOBAL: 0, limits.ScopeKind.LOCATION: 1,
             limits.ScopeKind.BASE_MODEL: 2}
    uses: list[LimitUse] = []
    for scope in sorted(scopes, key=lambda s: (order[s.kind], s.name)):
        cap = learned.effective(scope, configured)
        if cap is None:
            continue
        uses.append(LimitUse(scope=scope, active=counts.get(scope, 0), limit=cap,
                             configured=configured.limit_for(scope)))
    return tuple(uses)


def recent_failures(jobs: Iterable[Job], now: float) -> tuple[Job, ...]:
    """Failed jobs that ended within FAILURE_WINDOW_S, newest end first, at most FAILURES_SHOWN
    (one per id: the same job may come from memory and from the store)."""
    by_id: dict[str, Job] = {}
    for job in jobs:
        if (job.state is LocalState.FAILED and job.ended_at is not None
                and now - job.ended_at <= FAILURE_WINDOW_S):
            by_id.setdefault(job.id, job)
    newest = sorted(by_id.values(), key=lambda j: (j.ended_at or 0.0, j.id), reverse=True)
    return tuple(newest[:FAILURES_SHOWN])


def queue_head(order: Iterable[str], positions: Mapping[str, int],
               jobs: Mapping[str, Job]) -> tuple[QueuedJob, ...]:
    """The first QUEUE_SHOWN jobs of a sorted queue (`order`: ids, first first) that are still
    queued in `jobs`, with their sorted positions."""
    head: list[QueuedJob] = []
    for job_id in itertools.islice(order, QUEUE_SHOWN * 2):
        job = jobs.get(job_id)
        if job is None or job.state is not LocalState.QUEUED:
            continue  # started or cancelled since the sort
        head.append(QueuedJob(job=job, position=positions.get(job_id, len(head) + 1)))
        if len(head) == QUEUE_SHOWN:
            break
    return tuple(head)


def merged_head(groups: Iterable[QueueGroup], now: float,
                settings: SchedulingSettings) -> tuple[QueuedJob, ...]:
    """The first QUEUE_SHOWN queued jobs of a working set, merged from its groups' sorted orders
    (each at most workset.RESORT_S old): no sort of the queue, a heap of one head per group."""
    merged = heapq.merge(*(group.ordered(now, settings) for group in groups),
                         key=lambda job: sort_key(job, now, settings))
    return tuple(QueuedJob(job=job, position=i + 1)
                 for i, job in enumerate(itertools.islice(merged, QUEUE_SHOWN)))


def build(*, role: InstanceRole, version: str, now: float, counts: Mapping[LocalState, int],
          active: Iterable[Job], queued: tuple[QueuedJob, ...], queue_depth: int,
          oldest_queued_at: float | None, failures: Iterable[Job],
          configured: limits.Limits | None, adaptive: limits.AdaptiveLimits | None,
          paused: Mapping[tuple[str, str], recovery.Pause],
          last_poll_at: float | None) -> Overview:
    """The overview from the active jobs, the head of the queue and its statistics, and what
    else the instance knows. No `configured` limits: none listed (a standby not told them)."""
    active_jobs = [job for job in active if job.state in ACTIVE_STATES]
    entries = []
    for job in active_jobs:
        since = job.submit_started_at if job.submit_started_at is not None else job.created_at
        entries.append(ActiveJob(job=job, since=since, elapsed_s=max(0.0, now - since)))
    entries.sort(key=lambda a: (a.since, a.job.id))
    return Overview(
        role=role, version=version, at=now,
        counts={state: counts.get(state, 0) for state in LocalState},
        queue_depth=queue_depth,
        oldest_queued_at=oldest_queued_at if queue_depth else None,
        queued=queued, active=tuple(entries),
        recent_failures=recent_failures(failures, now),
        limits=() if configured is None else limit_uses(active_jobs, configured, adaptive),
        paused=tuple(PausedCreates(project=p, location=loc, pause=pause)
                     for (p, loc), pause in sorted(paused.items())),
        last_poll_at=last_poll_at,
    )
