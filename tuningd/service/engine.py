"""The engine: the API's facade, the planning loop, and the start and stop of the daemon's work.

Each round the planner (planner.plan) decides the remote calls to make; `Actions` makes them and
hands their results to the `Ledger`, the one commit path of every job change.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from tuningd import __version__
from tuningd.adapters import failpoints
from tuningd.adapters.log import enabled_for
from tuningd.adapters.metrics import Metrics
from tuningd.core import errors, limits, overview, planner, recovery, schedule
from tuningd.core.machine import Event
from tuningd.core.model import ACTIVE_STATES, Job, JobEvent, LocalState
from tuningd.core.overview import Overview
from tuningd.core.settings import EngineSettings
from tuningd.ports import JobStore, VertexApi
from tuningd.service import gauges
from tuningd.service.actions import Actions
from tuningd.service.breaker import Breaker
from tuningd.service.capacity import Capacity
from tuningd.service.facade import (
    JobPredicate,
    Page,
    check_cancellable,
    list_page,
    queued_job,
)
from tuningd.service.gauges import scope_label
from tuningd.service.ledger import Ledger
from tuningd.service.overview import OverviewCache

Clock = Callable[[], float]

log = structlog.get_logger("tuningd.service.engine")

__all__ = ["Clock", "Engine", "EngineSettings", "JobPredicate", "Page", "scope_label"]


class Engine:
    """The daemon's heart: accepts jobs, plans, has the actions called, serves the facade."""

    def __init__(self, store: JobStore, vertex: VertexApi, settings: EngineSettings, *,
                 metrics: Metrics | None = None, clock: Clock = time.time,
                 rng: random.Random | None = None,
                 on_progress: Callable[[], None] | None = None,
                 new_id: Callable[[], str] | None = None,
                 may_create: Callable[[], bool] | None = None, shared: bool = False) -> None:
        self._store = store
        self.settings = settings
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_progress = on_progress
        # Local job ids; injectable so that a simulation replays a seed exactly.
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        # shared: other instances write the store too (see ledger); may_create: asked right
        # before every Vertex create (a leader's lease still valid by its own clock).
        self._ledger = Ledger(store, metrics=metrics, clock=clock, rng=self._rng,
                              polling=lambda: self.settings.polling, shared=shared)
        self._capacity = Capacity(settings.budget)
        # Places whose creates are paused after a project-wide error.
        self._breaker = Breaker(lambda: self.settings.breaker, clock, self._rng, metrics)
        self._actions = Actions(ledger=self._ledger, capacity=self._capacity,
                                breaker=self._breaker, vertex_client=vertex,
                                settings=lambda: self.settings, metrics=metrics, clock=clock,
                                rng=self._rng, wake=self.wake, may_create=may_create)
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._overviews = OverviewCache(store)
        self._accepting: dict[str, asyncio.Event] = {}
        self._started = False
        self.draining = False

    # ------------------------------------------------------------------ facade for the API

    async def submit(self, project: str, location: str, spec: Mapping[str, Any], *,
                     priority: int = 0, request_id: str | None = None,
                     api_version: str | None = None) -> tuple[Job, bool]:
        """Store a validated TuningJob spec as a queued job (idempotent per request_id).

        `api_version` is the version the spec was parsed at; the job's Vertex calls use it
        (None: the Vertex client's default)."""
        if self.draining:
            raise errors.Unavailable("tuningd is shutting down; retry against the next instance.")
        now = self._clock()
        job = queued_job(self._new_id(), project, location, spec, priority=priority,
                         request_id=request_id, api_version=api_version, now=now)
        # The store write runs outside the engine lock so that concurrent creates share one
        # group commit. Nothing else can touch a job before it is in memory, except a cancel
        # by id (a requestId replay hands out the id early): cancel() waits on this event.
        accepted = asyncio.Event()
        self._accepting[job.id] = accepted
        try:
            try:
                stored, created = await self._store.create_or_get(job, "accepted")
            except errors.StoreError as exc:
                self._store_failed("accept", exc)
                raise
            # (On a shared store the change feed may have brought the job in already.)
            if created and stored.id not in self._ledger.jobs:
                self._ledger.jobs[stored.id] = stored
                self._ledger.counts[stored.state] += 1
                self._ledger.version += 1
        finally:
            accepted.set()
            del self._accepting[job.id]
        if created:
            self._actions.sweep_at.setdefault((project, location),
                                      now + self.settings.sweep_interval_s)
            # Per request, so debug (issue 11): at info a job's story starts with its first
            # transition; the check spares the cost of building a line that would be dropped.
            if enabled_for("tuningd.service.engine", logging.DEBUG):
                log.debug("job.accepted", job_id=stored.id, project=project,
                          location=location, base_model=job.base_model, priority=priority,
                          request_id=request_id, api_version=api_version)
            if self._metrics is not None:
                # Only the queued count changed: one gauge, not one per state.
                self._metrics.set_job_count(stored.state, self._ledger.counts[stored.state])
            if self._has_room():
                self._wakeup.set()
        return stored, created

    def _has_room(self) -> bool:
        """Whether the global limit could admit one more job (else waking the loop is waste)."""
        cap = self._capacity.adaptive.effective(limits.GLOBAL, self.settings.limits)
        active = sum(self._ledger.counts.get(state, 0) for state in ACTIVE_STATES)
        return cap is None or active < cap

    async def get(self, job_id: str) -> Job | None:
        job = self._ledger.jobs.get(job_id)
        if job is not None:
            return job
        try:
            return await self._store.get(job_id)
        except errors.StoreError as exc:
            self._store_failed("get", exc)
            raise

    async def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        try:
            return await self._store.ids_with_prefix(prefix, limit)
        except errors.StoreError as exc:
            self._store_failed("ids_with_prefix", exc)
            raise

    async def history(self, job_id: str) -> list[JobEvent]:
        try:
            return await self._store.history(job_id)
        except errors.StoreError as exc:
            self._store_failed("history", exc)
            raise

    async def list_jobs(self, project: str | None, location: str | None, *,
                        predicate: JobPredicate | None,
                        page_size: int, after_key: str | None,
                        states: frozenset[LocalState] | None = None,
                        labels: Mapping[str, str] | None = None) -> Page:
        """Newest first, as the working set has each job (see facade.list_page)."""
        try:
            return await list_page(self._store, project, location, predicate=predicate,
                                   page_size=page_size, after_key=after_key, states=states,
                                   labels=labels,
                                   fresher=lambda job: self._ledger.jobs.get(job.id, job))
        except errors.StoreError as exc:
            self._store_failed("list", exc)
            raise

    async def cancel(self, job_id: str) -> Job:
        """Queued: cancelled at once. Active: the intent is stored and carried out by the loop."""
        accepting = self._accepting.get(job_id)
        if accepting is not None:
            await accepting.wait()
        async with self._ledger.lock:
            job = self._ledger.jobs.get(job_id)
            if job is None and self._ledger.shared:
                # Created on another instance and not taken in from the feed yet: take it now.
                job = await self._ledger.reload_locked(job_id)
            job = check_cancellable(job or await self._store.get(job_id), job_id)
            try:
                job = await self._ledger.apply_locked(job, Event.cancel_requested()) or job
            except errors.StoreError as exc:
                self._store_failed("cancel", exc)
                raise
        failpoints.hit("cancel.intent_written")
        self._wakeup.set()
        return job

    def queue_position(self, job: Job) -> int | None:
        """1-based place in the submission order; None unless queued.

        From the working set's groups, each sorted at most once a second (aging moves in steps
        of minutes), so a position costs a binary search per group, never a sort of the queue.
        """
        if job.state is not LocalState.QUEUED:
            return None
        return self._ledger.jobs.position(job.id, self._clock(), self.settings.scheduling)

    def spend_request(self, location: str) -> float:
        """Take one request token of the location's budget for a call made outside the loop
        (the pass-through): 0.0 when taken, else the seconds until one is there (none taken)."""
        return self._capacity.budgets.spend_request(location, self._clock())

    def ready(self) -> bool:
        return self._started and not self.draining

    def state_counts(self) -> dict[LocalState, int]:
        """Jobs per local state, as the engine tracks them (for status lines)."""
        return {state: self._ledger.counts.get(state, 0) for state in LocalState}

    async def overview(self) -> Overview:
        """The engine at a glance (JobService.overview): active jobs and queue statistics from
        the working set's index, the head of the queue merged from its groups' sorted orders;
        its failures, and those stored before its start."""
        now = self._clock()
        jobs = self._ledger.jobs
        stats = jobs.queue_stats()
        stored = await self._overviews.stored_failures(now, every_s=None)
        return overview.build(
            role=overview.InstanceRole.SINGLE, version=__version__, now=now,
            counts=self._ledger.counts, active=jobs.active.values(),
            queued=overview.merged_head(jobs.groups.values(), now, self.settings.scheduling),
            queue_depth=stats.depth, oldest_queued_at=stats.oldest_created_at,
            failures=[*self._ledger.failed, *stored], configured=self.settings.limits,
            adaptive=self._capacity.adaptive, paused=self._breaker.pauses,
            last_poll_at=self._actions.last_poll_success_at)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the working set; every submitting job reconciles and every remote job polls soon.

        A create that was in flight when the daemon stopped may still land on Vertex: its
        attempt is ended now, so the wait for a late landing counts from this restart.
        Every place ever used is swept at once (remote jobs may have run unseen meanwhile).
        """
        now = self._clock()
        jobs = await self._store.active_and_queued()
        counts = await self._store.count_by_state()
        self._ledger.counts = Counter(counts)
        in_flight: list[str] = []
        for job in jobs:
            first = schedule.after_restart(job, now)
            if first != job.next_action_at:
                job, before = job.evolve(next_action_at=first), job
                await self._ledger.update_locked(before, job)
            self._ledger.jobs[job.id] = job
            if job.state is LocalState.SUBMITTING and (
                    job.attempt_ended_at is None or job.submit_started_at is None
                    or job.attempt_ended_at < job.submit_started_at):
                in_flight.append(job.id)
        for job_id in in_flight:
            await self._ledger.transition(job_id, Event.create_outcome_unknown(
                reconcile_at=now, error_message="the daemon stopped while this create was in "
                "flight"))
            self._actions.count_unknown_outcome()
        for place in {*await self._store.places(), *self.settings.sweep_places}:
            self._actions.sweep_at[place] = now
            self._breaker.known(place)
        self._ledger.version += 1
        self._started = True
        self._ledger.publish_counts()
        recovering = sum(1 for j in jobs if j.state is LocalState.SUBMITTING)
        log.info("engine.started", working_set=len(jobs), reconciling=recovering,
                 places=len(self._actions.sweep_at))

    def paused_places(self) -> dict[planner.Place, recovery.Pause]:
        """Places whose creates are paused after a project-wide error (for views and status)."""
        return dict(self._breaker.pauses)

    def pause_for(self, job: Job) -> recovery.Pause | None:
        """The pause that holds this queued job back, if its place's creates are paused."""
        if job.state is not LocalState.QUEUED:
            return None
        return self._breaker.pauses.get((job.project, job.location))

    def reload(self, settings: EngineSettings) -> None:
        """Apply new limits and polling settings (SIGHUP); adaptive caps start afresh, and paused
        places probe at once (a reload is how an operator says "fixed, try now")."""
        self.settings = settings
        self._breaker.probe_now()
        for place in settings.sweep_places:
            self._actions.sweep_at.setdefault(place, self._clock())
        self._capacity.reset(settings.budget)
        self._ledger.version += 1
        self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    def halt(self) -> None:
        """Stop acting at once (this instance lost the lease): no new action, every call in
        flight abandoned as a crash would; the store says what happened to them."""
        self.draining = True
        self._started = False
        for task in list(self._tasks):
            task.cancel()

    async def absorb(self, job_id: str) -> None:
        """Another instance created or changed this job (the change feed): take it in."""
        if job_id in self._accepting:
            return  # this instance's own create, which submit() takes in
        async with self._ledger.lock:
            before = self._ledger.jobs.get(job_id)
            job = await self._ledger.reload_locked(job_id)
        if job is not None and job is not before:
            self._actions.sweep_at.setdefault((job.project, job.location),
                                              self._clock() + self.settings.sweep_interval_s)
            self._wakeup.set()

    async def absorb_all(self) -> None:
        """After a gap in the change feed: reread every non-terminal job and the counts."""
        for job in await self._store.active_and_queued():
            await self.absorb(job.id)
        for job_id in [j for j in self._ledger.jobs if j not in self._accepting]:
            await self.absorb(job_id)
        self._ledger.counts = Counter(await self._store.count_by_state())
        self._ledger.publish_counts()

    async def run(self, stop: asyncio.Event) -> None:
        """The loop: plan, start the actions, sleep until something is due or happens."""
        while not stop.is_set():
            self._wakeup.clear()
            started = time.perf_counter()
            delay = self._iterate()
            if self._metrics is not None:
                self._metrics.loop_iteration(time.perf_counter() - started)
            if self._on_progress is not None:
                self._on_progress()
            waiter = asyncio.ensure_future(self._wakeup.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, timeout=delay,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()

    async def step(self) -> int:
        """One planning round, then wait for every action it started (for tests and tools that
        drive time themselves). Returns the number of actions started."""
        before = set(self._tasks)
        self._iterate()
        started = self._tasks - before
        if started:
            await asyncio.gather(*started, return_exceptions=True)
        return len(started)

    async def drain(self, grace_s: float) -> None:
        """Stop accepting creates and let in-flight calls finish within `grace_s`."""
        self.draining = True
        pending = set(self._tasks)
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=1.0)
        log.info("engine.drained", in_flight=len(pending),
                 abandoned=sum(1 for t in pending if t.cancelled()))

    # ------------------------------------------------------------------ planning

    def _iterate(self) -> float:
        """One planning round; returns how long to sleep before the next one."""
        now = self._clock()
        s = self.settings
        working = self._ledger.jobs
        jobs = list(working.active.values())
        locations = working.locations() | {loc for _, loc in self._actions.sweep_at}
        plan = planner.plan(
            jobs, now, limits=s.limits, adaptive=self._capacity.adaptive,
            budgets=self._capacity.budgets.snapshot(locations, now), scheduling=s.scheduling,
            polling=s.polling, batch_refused=frozenset(self._capacity.batch_refused),
            busy=frozenset(self._capacity.busy), accept_submits=not self.draining,
            paused=self._breaker.pauses,
            sweeps={p: t for p, t in self._actions.sweep_at.items()
                    if p not in self._actions.sweeping},
            queue=working,
        )
        for action in plan.actions:
            budget = self._capacity.budgets.location(action.location, now)
            took = (budget.take_create(now) if action.kind is planner.ActionKind.SUBMIT
                    else budget.take_request(now))
            if not took:
                continue
            if action.kind is planner.ActionKind.SUBMIT:
                self._breaker.probe_started(action.place)
            elif action.kind is planner.ActionKind.SWEEP:
                self._actions.sweeping.add(action.place)
            self._capacity.busy.update(action.job_ids)
            target = action.job_ids[0] if action.job_ids else "/".join(action.place)
            task = asyncio.get_running_loop().create_task(self._execute(action),
                                                           name=f"{action.kind}:{target}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._metrics is not None:
            gauges.publish_scopes(self._metrics, jobs, self._capacity.adaptive, s.limits)
            gauges.publish_oldest(self._metrics, jobs, working.queue_stats())
        delay = s.tick_s
        if plan.next_due_at is not None:
            delay = min(delay, max(0.0, plan.next_due_at - now))
        if plan.over_budget:
            delay = min(delay, self._budget_wait(plan.over_budget, now))
        return delay

    def _budget_wait(self, over_budget: Sequence[str], now: float) -> float:
        """Until the bucket that holds the due jobs back has a token: a create waits for the
        create bucket (and the request bucket), anything else for the request bucket."""
        blocked: set[tuple[str, bool]] = set()
        for job_id in over_budget:
            job = self._ledger.jobs.get(job_id)
            if job is not None:
                blocked.add((job.location, job.state is LocalState.QUEUED))
        waits = []
        for location, create in blocked:
            budget = self._capacity.budgets.location(location, now)
            wait = budget.requests.seconds_until(now)
            if create:
                wait = max(wait, budget.creates.seconds_until(now))
            waits.append(wait)
        return max(0.05, min(waits, default=self.settings.tick_s))

    async def _execute(self, action: planner.Action) -> None:
        try:
            await self._actions.execute(action)
        except asyncio.CancelledError:
            raise
        except errors.StoreError as exc:
            # The disk is full or the database read-only: nothing of this action was stored.
            # Back off (in memory if need be) and leave a history note for when it works again.
            self._store_failed(action.kind.value, exc)
            for job_id in action.job_ids:
                self._ledger.note(job_id, f"store error during {action.kind.value}, retried "
                                          f"later: {exc.message}")
            await self._ledger.push_back(action.job_ids, self.settings.retry)
        except Exception:
            # A bug or a surprise in one job's handling must never stop the daemon; the job is
            # retried at its next due time, which the failed action did not move.
            log.exception("engine.action_failed", action=action.kind.value,
                          job_ids=list(action.job_ids))
            await self._ledger.push_back(action.job_ids, self.settings.retry)
        finally:
            self._capacity.busy.difference_update(action.job_ids)
            if action.kind is planner.ActionKind.SWEEP:
                self._actions.sweeping.discard(action.place)
            self._wakeup.set()

    # ------------------------------------------------------------------ metrics

    def _store_failed(self, operation: str, exc: errors.StoreError) -> None:
        """One log line and one count per store error (the disk is full, the db read-only)."""
        log.error("store.failed", operation=operation, error=exc.message)
        if self._metrics is not None:
            self._metrics.count_store_error("write" if exc.writing else "read")

