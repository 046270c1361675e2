"""The working set and its one commit path: every change to a job is applied, stored and told here.

All changes to a job go through `commit_locked` under one lock, so the in-memory working set
(every non-terminal job) and SQLite never disagree, and a job is changed by one writer at a time.
Remote calls run outside the lock; their results are applied to the job as it is *then* (a
cancel may have arrived meanwhile), which the state machine is built for.

On a store shared by several instances (`shared`), a standby may write a job too (a cancel
intent): every write then carries the row it expects, and a StaleWrite rereads the job and
applies the event to it as it is now, instead of being a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from tuningd.adapters.metrics import Metrics
from tuningd.config import PollingSettings, RetrySettings
from tuningd.core import errors, machine
from tuningd.core.eta import RunModel
from tuningd.core.machine import Event, Transition
from tuningd.core.model import Job, LocalState
from tuningd.core.schedule import retry_at, schedule_poll
from tuningd.core.workset import WorkingSet
from tuningd.ports import JobStore, StaleWrite
from tuningd.vertex import wire

log = structlog.get_logger("tuningd.service.engine")

# How many of the latest failures the ledger remembers for status views.
RECENT_FAILED_KEPT = 50


class Ledger:
    """The non-terminal jobs in memory, committed to the store one transition at a time."""

    def __init__(self, store: JobStore, *, metrics: Metrics | None, clock: Callable[[], float],
                 rng: random.Random, polling: Callable[[], PollingSettings],
                 shared: bool = False) -> None:
        self.store = store
        self.shared = shared
        self.jobs = WorkingSet()
        # Run times of the jobs that succeeded, for when a running one may end (core/eta).
        self.runs = RunModel()
        self.counts: Counter[LocalState] = Counter()
        self.lock = asyncio.Lock()
        # Bumped whenever the queue or the limits may look different (queue positions, views).
        self.version = 0
        self._metrics = metrics
        self._clock = clock
        self._rng = rng
        self._polling = polling
        # History notes that could not be written (store errors), written with the next commit.
        self._notes: dict[str, list[str]] = {}
        # The jobs that failed here lately, newest first (status views; bounded).
        self.failed: deque[Job] = deque(maxlen=RECENT_FAILED_KEPT)

    def note(self, job_id: str, text: str) -> None:
        """A history line for the job's next commit (its store refused one just now)."""
        self._notes.setdefault(job_id, []).append(text)

    async def transition(self, job_id: str, event: Event, *,
                         schedule: bool = False) -> Job | None:
        """Apply `event` to the job as it is now, persist, publish; None if the job is gone.

        With `schedule`, the next poll is set by the policy (interval reset after a change)."""
        async with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            return await self.apply_locked(job, event, schedule=schedule)

    async def apply_locked(self, job: Job, event: Event, *, schedule: bool = False) -> Job | None:
        """Apply `event` to `job` and commit (lock held); on a shared store, a job another
        instance changed meanwhile is reread and the event applied to it as it is now."""
        for attempt in range(3):
            try:
                return await self._apply_locked(job, event, schedule)
            except StaleWrite:
                if not self.shared or attempt == 2:
                    raise
                fresh = await self.reload_locked(job.id)
                log.info("job.reread", job_id=job.id, event=event.kind.value,
                         state=None if fresh is None else fresh.state.value)
                if fresh is None or fresh.state.is_terminal:
                    return fresh
                job = fresh
        raise AssertionError("unreachable")

    async def _apply_locked(self, job: Job, event: Event, schedule: bool) -> Job:
        now = self._clock()
        try:
            tr = machine.apply(job, event, now)
        except errors.IllegalTransition as exc:
            # A stale result (e.g. an observation after the job ended): drop it, loudly.
            log.warning("job.event_ignored", job_id=job.id, event=event.kind.value,
                        state=job.state.value, error=exc.message)
            return job
        if schedule and not tr.job.state.is_terminal and not (
                tr.job.state is LocalState.CANCELLING and tr.job.cancel_sent_at is None):
            # (A fresh cancel is due now, as the machine set it.)
            # Only a local state change starts the ramp again: a sub-state or updateTime
            # change inside RUNNING says nothing about when the job ends (issue 11).
            polling = self._polling()
            sched = schedule_poll(tr.job, tr.state_changed, now, polling, self._rng,
                                  self.runs.eta(tr.job, max_interval_s=polling.max_interval_s))
            tr = tr.with_schedule(sched.next_poll_at, sched.interval_s)
        return await self.commit_locked(tr)

    async def update_locked(self, before: Job, after: Job) -> None:
        """Store bookkeeping fields (no event); on a shared store only over the row `before`
        (so a cancel intent another instance wrote meanwhile is never overwritten)."""
        if self.shared:
            await self.store.apply(before, after, None)
        else:
            await self.store.update_job(after)

    async def reload_locked(self, job_id: str) -> Job | None:
        """Take the stored job into the working set if another instance changed it (or created
        it); the job as the working set has it now (None: unknown or ended)."""
        stored = await self.store.get(job_id)
        held = self.jobs.get(job_id)
        if stored is None:
            return held
        if held is not None and (held.state, held.updated_at) == (stored.state,
                                                                 stored.updated_at):
            return held  # this instance's own write (bookkeeping kept in memory wins)
        if held is None and stored.state.is_terminal:
            return None  # ended already (by this instance, or before it saw the job)
        if held is not None:
            self.counts[held.state] -= 1
        self.counts[stored.state] += 1
        self.version += 1
        if stored.state.is_terminal:
            self.jobs.pop(job_id, None)
            self.publish_counts()
            return None
        self.jobs[job_id] = stored
        self.publish_counts()
        return stored

    async def commit_locked(self, tr: Transition) -> Job:
        """Store a transition (history row when it is news), then update memory; lock held."""
        before, after = tr.before, tr.job
        notes = self._notes.get(after.id, [])
        if tr.changed or tr.state_changed or notes:
            detail: dict[str, Any] = {"event": tr.event.value}
            if after.remote_state:
                detail["remote_state"] = after.remote_state
            if after.remote_substate:
                detail["remote_substate"] = after.remote_substate
            noteworthy = tr.changed or tr.state_changed
            await self.store.apply(before, after, tr.reason if noteworthy else None, detail,
                                   notes=notes)
            self._notes.pop(after.id, None)
        elif after != before:
            await self.update_locked(before, after)
        if after.state.is_terminal:
            self.jobs.pop(after.id, None)
            self.runs.learn(after)
            if tr.state_changed and after.state is LocalState.FAILED:
                self.failed.appendleft(after)
        else:
            self.jobs[after.id] = after
        if tr.state_changed:
            self.counts[before.state] -= 1
            self.counts[after.state] += 1
            self.version += 1
        self._after_commit(tr)
        return after

    async def reschedule(self, job_id: str, at: float) -> None:
        """Move the job's next action (bookkeeping: no history row)."""
        async with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            later = job.evolve(next_action_at=at)
            try:
                await self.update_locked(job, later)
            except StaleWrite:
                if not self.shared:
                    raise
                await self.reload_locked(job_id)
                return
            self.jobs[job_id] = later

    async def push_back(self, job_ids: Iterable[str], retry: RetrySettings) -> None:
        """Delay jobs whose action failed, so a persistent fault does not become a hot loop."""
        now = self._clock()
        async with self.lock:
            for job_id in job_ids:
                job = self.jobs.get(job_id)
                if job is None:
                    continue
                later = job.evolve(next_action_at=retry_at(job, now, retry, self._rng),
                                   retry_count=job.retry_count + 1)
                # Scheduling is bookkeeping: kept in memory even when the store cannot take it,
                # so a failing disk slows the job down instead of spinning on it.
                self.jobs[job_id] = later
                try:
                    await self.update_locked(job, later)
                except errors.TuningdError as exc:
                    log.warning("job.push_back_not_stored", job_id=job_id, error=exc.message)

    def publish_counts(self) -> None:
        if self._metrics is not None:
            self._metrics.set_job_counts(self.counts)

    def _after_commit(self, tr: Transition) -> None:
        """One log line per change, with the job id bound; the metrics of the change."""
        before, after = tr.before, tr.job
        bound = log.bind(job_id=after.id)
        if tr.state_changed:
            bound.info("job.transition", from_state=before.state.value,
                       to_state=after.state.value, reason=tr.reason,
                       remote_name=after.remote_name, remote_state=after.remote_state)
        elif tr.event is machine.EventKind.TRANSIENT_ERROR:
            bound.warning("job.transient_error", state=after.state.value, reason=tr.reason,
                          retry_count=after.retry_count)
        elif tr.changed:
            bound.info("job.updated", state=after.state.value, reason=tr.reason,
                       remote_substate=after.remote_substate)
        m = self._metrics
        if m is None:
            return
        now = self._clock()
        if tr.state_changed:
            m.observe_transition(before.state, after.state)
            self.publish_counts()
        if tr.changed and tr.event is machine.EventKind.REMOTE_OBSERVED:
            remote = after.remote or {}
            changed_at = remote.get("endTime") if after.state.is_terminal else None
            changed_at = changed_at or remote.get("updateTime")
            if isinstance(changed_at, str):
                with contextlib.suppress(errors.TuningdError):
                    m.observe_detection_delay(now - wire.parse_timestamp(changed_at))
        if tr.state_changed and after.state.is_terminal:
            m.observe_job_duration(after.state, now - after.created_at)
            remote = after.remote or {}
            start, end = remote.get("startTime"), remote.get("endTime")
            if isinstance(start, str) and isinstance(end, str):
                with contextlib.suppress(errors.TuningdError):
                    m.observe_run_duration(after.state, wire.parse_timestamp(end)
                                           - wire.parse_timestamp(start))
