"""The job facade of an instance without the lease: the whole API, against the shared store.

Creates are stored (idempotent by requestId) and reach the leader through the store's change
feed; a cancel is stored as the job's cancel intent (a transition, like the leader's own) for
the leader to carry out; reads come from the store. What only the leader knows is answered from
the store or not at all:

- queue positions come from a snapshot of the store's queue, refreshed by `refresh()` (the
  leadership loop calls it every `ha.acquire_interval_s`), so they lag by up to that much;
- paused places (the breaker), lowered caps and the last poll live in the leader's memory: a
  standby shows none of them in its overview, and its failures are reread every
  FAILURES_REREAD_S;
- the pass-through's request budget is this instance's own bucket of the configured size: the
  engine's calls (the bulk of the traffic) are made by the leader alone, and each standby caps
  the pass-through calls it forwards at the same rate.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from tuningd import __version__
from tuningd.config import SchedulingSettings
from tuningd.core import errors, machine, overview, planner, recovery
from tuningd.core.budget import Budgets, BudgetSettings
from tuningd.core.limits import Limits
from tuningd.core.machine import Event
from tuningd.core.model import ACTIVE_STATES, Job, JobEvent, LocalState
from tuningd.core.overview import Overview
from tuningd.ports import JobStore, StaleWrite
from tuningd.service.facade import (
    JobPredicate,
    Page,
    QueueOrder,
    check_cancellable,
    list_page,
    queued_job,
)
from tuningd.service.overview import OverviewCache

log = structlog.get_logger("tuningd.standby")

__all__ = ["FAILURES_REREAD_S", "Standby"]

# A cancel that keeps losing to the leader's writes gives up after this many rereads (503).
_CANCEL_ATTEMPTS = 5
# A standby's overview rereads the store's failed jobs at most this often.
FAILURES_REREAD_S = 10.0


class Standby:
    """A JobService over the shared store, for an instance that does not run the engine."""

    def __init__(self, store: JobStore, *, scheduling: Callable[[], SchedulingSettings],
                 budget: BudgetSettings, clock: Callable[[], float] = time.time,
                 new_id: Callable[[], str] | None = None,
                 limits: Callable[[], Limits] | None = None) -> None:
        self._store = store
        self._scheduling = scheduling
        # The configured limits, for the overview (None: none shown).
        self._limits = limits
        # From the last refresh, for the overview: the head of the queue, the active jobs, the
        # oldest queued job (not every job: the queue may be long).
        self._head: tuple[overview.QueuedJob, ...] = ()
        self._active: list[Job] = []
        self._oldest_queued_at: float | None = None
        self._overviews = OverviewCache(store)
        self._clock = clock
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        self._budgets = Budgets(budget)
        self._queue = QueueOrder.of((), clock(), scheduling())
        self._counts: dict[LocalState, int] = dict.fromkeys(LocalState, 0)
        self._started = False
        self.draining = False

    async def refresh(self) -> None:
        """Reread the queue order and the counts from the store (for positions and status)."""
        jobs = await self._store.active_and_queued()
        counts = await self._store.count_by_state()
        now = self._clock()
        self._queue = QueueOrder.of(jobs, now, self._scheduling())
        head_ids = set(itertools.islice(self._queue.order(), overview.QUEUE_SHOWN))
        self._head = overview.queue_head(
            self._queue.order(), self._queue.positions,
            {job.id: job for job in jobs if job.id in head_ids})
        self._active = [job for job in jobs if job.state in ACTIVE_STATES]
        self._oldest_queued_at = min((job.created_at for job in jobs
                                      if job.state is LocalState.QUEUED), default=None)
        self._counts = {state: counts.get(state, 0) for state in LocalState}
        self._started = True

    # ------------------------------------------------------------------ JobService

    async def submit(self, project: str, location: str, spec: Mapping[str, Any], *,
                     priority: int = 0, request_id: str | None = None,
                     api_version: str | None = None) -> tuple[Job, bool]:
        """Store the queued job; the leader hears of it through the change feed."""
        if self.draining:
            raise errors.Unavailable("tuningd is shutting down; retry against the next instance.")
        job = queued_job(self._new_id(), project, location, spec, priority=priority,
                         request_id=request_id, api_version=api_version, now=self._clock())
        stored, created = await self._store.create_or_get(job, "accepted")
        if created:
            # Per request, so debug, as on the leader (issue 11).
            log.debug("job.accepted", job_id=stored.id, project=project, location=location,
                      base_model=stored.base_model, priority=priority, request_id=request_id,
                      api_version=api_version, role="standby")
        return stored, created

    async def get(self, job_id: str) -> Job | None:
        return await self._store.get(job_id)

    async def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        return await self._store.ids_with_prefix(prefix, limit)

    async def history(self, job_id: str) -> list[JobEvent]:
        return await self._store.history(job_id)

    async def list_jobs(self, project: str | None, location: str | None, *,
                        predicate: JobPredicate | None,
                        page_size: int, after_key: str | None,
                        states: frozenset[LocalState] | None = None,
                        labels: Mapping[str, str] | None = None) -> Page:
        return await list_page(self._store, project, location, predicate=predicate,
                               page_size=page_size, after_key=after_key, states=states,
                               labels=labels)

    async def cancel(self, job_id: str) -> Job:
        """Store the cancel intent as a transition of the stored job (a queued job ends at
        once); the leader carries it out. A write of the leader in between is reread."""
        for _ in range(_CANCEL_ATTEMPTS):
            job = check_cancellable(await self._store.get(job_id), job_id)
            tr = machine.apply(job, Event.cancel_requested(), self._clock())
            if tr.job == tr.before:
                return job  # asked already
            try:
                await self._store.apply(tr.before, tr.job, tr.reason,
                                        {"event": tr.event.value, "role": "standby"})
            except StaleWrite:
                continue
            log.info("job.cancel_requested", job_id=job_id, state=tr.job.state.value,
                     role="standby")
            return tr.job
        raise errors.Unavailable(
            f"the cancel of tuning job {job_id} kept meeting the leader's writes; retry")

    def queue_position(self, job: Job) -> int | None:
        """The job's place in the store's queue as of the last refresh (None unless queued)."""
        if job.state is not LocalState.QUEUED:
            return None
        return self._queue.position(job, self._clock(), self._scheduling())

    def pause_for(self, job: Job) -> recovery.Pause | None:
        return None

    def paused_places(self) -> dict[planner.Place, recovery.Pause]:
        return {}

    def spend_request(self, location: str) -> float:
        """One token of this instance's own pass-through budget for the location."""
        return self._budgets.spend_request(location, self._clock())

    def ready(self) -> bool:
        return self._started and not self.draining

    def state_counts(self) -> dict[LocalState, int]:
        return dict(self._counts)

    async def overview(self) -> Overview:
        """The store as of the last refresh: counts, the queue's head, active jobs, limits;
        failures from the store (reread at most every FAILURES_REREAD_S)."""
        now = self._clock()
        failures = await self._overviews.stored_failures(now, every_s=FAILURES_REREAD_S)
        return overview.build(
            role=overview.InstanceRole.STANDBY, version=__version__, now=now,
            counts=self._counts, active=self._active,
            queued=self._head,
            queue_depth=self._counts.get(LocalState.QUEUED, 0),
            oldest_queued_at=self._oldest_queued_at, failures=failures,
            configured=self._limits() if self._limits is not None else None,
            adaptive=None, paused={}, last_poll_at=None)
