"""The job facade the API calls (`JobService`), and the parts the leader and a standby share."""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tuningd.config import SchedulingSettings
from tuningd.core import errors, planner, recovery, schedule
from tuningd.core.model import LOCAL_TO_REMOTE, Job, JobEvent, LocalState
from tuningd.core.overview import Overview
from tuningd.ports import JobStore, page_key

JobPredicate = Callable[[Job], bool]

__all__ = ["QUEUE_RESORT_S", "JobPredicate", "JobService", "Page", "QueueOrder",
           "check_cancellable", "list_page", "queued_job"]

# Queue positions come from a sort at most this old (a long queue under a burst of creates
# would otherwise be re-sorted per request).
QUEUE_RESORT_S = 1.0


@dataclass(frozen=True)
class Page:
    """One page of a job listing, newest first."""

    jobs: Sequence[Job]
    next_key: str | None


@dataclass(frozen=True)
class QueueOrder:
    """The queue order as of one sort, for queue positions."""

    version: int
    computed_at: float
    positions: dict[str, int]  # in queue order (the first queued job first)
    neg_priorities: list[int]  # ascending, i.e. by effective priority descending

    @classmethod
    def of(cls, jobs: Iterable[Job], now: float, scheduling: SchedulingSettings, *,
           version: int = 0) -> QueueOrder:
        order = schedule.queue_order(jobs, now, scheduling)
        return cls(version=version, computed_at=now,
                   positions={j.id: i + 1 for i, j in enumerate(order)},
                   neg_priorities=[-schedule.effective_priority(j, now, scheduling)
                                   for j in order])

    def order(self) -> Iterator[str]:
        """The sorted job ids, first first (for the head of the queue in status views)."""
        return iter(self.positions)

    def position(self, job: Job, now: float, scheduling: SchedulingSettings) -> int:
        """1-based place of a queued job; one newer than the sort is placed by a binary search
        on the sorted priorities (after all of equal or higher priority)."""
        known = self.positions.get(job.id)
        if known is not None:
            return known
        ahead = bisect.bisect_right(
            self.neg_priorities, -schedule.effective_priority(job, now, scheduling))
        return ahead + 1


class JobService(Protocol):
    """What the API (and the pass-through) ask of the daemon: the leader's Engine, a standby's
    facade over the shared store, or the switch between them as the lease comes and goes."""

    @property
    def draining(self) -> bool:
        """True once the instance is shutting down (creates answer 503)."""
        ...

    async def submit(self, project: str, location: str, spec: Mapping[str, Any], *,
                     priority: int = 0, request_id: str | None = None,
                     api_version: str | None = None) -> tuple[Job, bool]:
        """Store a validated spec as a queued job (idempotent per request_id); (job, created)."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Ids of the jobs whose id starts with `prefix`, in id order, at most `limit`."""
        ...

    async def history(self, job_id: str) -> list[JobEvent]: ...

    async def list_jobs(self, project: str | None, location: str | None, *,
                        predicate: JobPredicate | None,
                        page_size: int, after_key: str | None,
                        states: frozenset[LocalState] | None = None,
                        labels: Mapping[str, str] | None = None) -> Page: ...

    async def cancel(self, job_id: str) -> Job:
        """Store the cancel intent (a queued job is cancelled at once); the job after it."""
        ...

    def queue_position(self, job: Job) -> int | None: ...

    def pause_for(self, job: Job) -> recovery.Pause | None: ...

    def paused_places(self) -> dict[planner.Place, recovery.Pause]: ...

    def spend_request(self, location: str) -> float:
        """Take a request token for a pass-through call: 0.0, or the seconds to wait."""
        ...

    def ready(self) -> bool: ...

    def state_counts(self) -> dict[LocalState, int]: ...

    async def overview(self) -> Overview:
        """The instance at a glance (status page, `tuningd status`): counts, the head of the
        queue, active jobs, recent failures, limits, paused creates, role. Costs the active
        jobs and small caps, never a walk or sort of the queue or the history per request
        (see core.overview)."""
        ...


def queued_job(job_id: str, project: str, location: str, spec: Mapping[str, Any], *,
               priority: int, request_id: str | None, api_version: str | None,
               now: float) -> Job:
    """The queued job a create makes, before it is stored."""
    base_model = str(spec.get("baseModel")
                     or (spec.get("preTunedModel") or {}).get("tunedModelName") or "")
    return Job(
        id=job_id, project=project, location=location,
        spec_json=json.dumps(spec, sort_keys=True, separators=(",", ":")),
        base_model=base_model, state=LocalState.QUEUED, created_at=now, updated_at=now,
        priority=priority, request_id=request_id,
        display_name=str(spec.get("tunedModelDisplayName", "")), next_action_at=now,
        api_version=api_version,
    )


def check_cancellable(job: Job | None, job_id: str) -> Job:
    """The job, if a cancel may be asked of it (NotFound, FailedPrecondition otherwise)."""
    if job is None:
        raise errors.NotFound(f"The TuningJob {job_id} does not exist.")
    if job.state.is_terminal:
        raise errors.FailedPrecondition(
            f"The tuning job {job_id} is already in a terminal state: "
            f"{LOCAL_TO_REMOTE[job.state].value}.")
    return job


async def list_page(store: JobStore, project: str | None, location: str | None, *,
                    predicate: JobPredicate | None, page_size: int, after_key: str | None,
                    states: frozenset[LocalState] | None, labels: Mapping[str, str] | None,
                    fresher: Callable[[Job], Job] = lambda job: job) -> Page:
    """Newest first; keeps reading store pages until `page_size` jobs match (`project` /
    `location` None: every one the store holds).

    `states` / `labels` are necessary conditions of `predicate` (store_pushdown) that the
    store answers from its indexes, so a rare match does not read the whole history;
    `predicate` stays the final check. An empty `states` matches nothing. `fresher` gives a
    job as its owner holds it now (the leader's working set may be ahead of the store)."""
    if states is not None and not states:
        return Page([], None)
    out: list[Job] = []
    key = after_key
    batch_size = max(page_size, 100)
    while True:
        batch, next_key = await store.list_page(
            project, location, states=states or None, after_key=key,
            limit=batch_size, labels=labels or None)
        for i, job in enumerate(batch):
            job = fresher(job)
            if predicate is None or predicate(job):
                out.append(job)
                if len(out) == page_size:
                    more = i + 1 < len(batch) or next_key is not None
                    return Page(out, page_key(job) if more else None)
        if next_key is None:
            return Page(out, None)
        key = next_key
