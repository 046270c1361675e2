"""The engine: runs the policy's decisions through the store and the Vertex client."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from tuningd import errors, failpoints, machine, policy, recovery, vertex, wire
from tuningd.breaker import Breaker
from tuningd.errors import Code, RemoteError
from tuningd.machine import Event, RemoteSnapshot, Transition
from tuningd.metrics import Metrics
from tuningd.model import (
    ACTIVE_STATES,
    LABEL_JOB_ID,
    LABEL_MANAGED_BY,
    LOCAL_TO_REMOTE,
    MANAGED_BY_VALUE,
    Job,
    JobEvent,
    LocalState,
)
from tuningd.store import Store, page_key
from tuningd.sweep import ACTIVE_REMOTE_FILTER, Sweeper
from tuningd.vertex import JobList, VertexClient

JobPredicate = Callable[[Job], bool]
Clock = Callable[[], float]

log = structlog.get_logger("tuningd.engine")

@dataclass(frozen=True)
class Page:
    """One page of a job listing, newest first."""

    jobs: Sequence[Job]
    next_key: str | None


@dataclass(frozen=True)
class _QueueCache:
    """The queue order as of one sort, for queue positions."""

    version: int
    computed_at: float
    positions: dict[str, int]
    neg_priorities: list[int]  # ascending, i.e. by effective priority descending


_QUEUE_RESORT_S = 1.0


@dataclass(frozen=True)
class EngineSettings:
    """Everything the engine needs from the configuration, as core policy values."""

    limits: policy.Limits = field(default_factory=policy.Limits)
    polling: policy.PollingSettings = field(default_factory=policy.PollingSettings)
    retry: policy.RetrySettings = field(default_factory=policy.RetrySettings)
    budget: policy.BudgetSettings = field(default_factory=policy.BudgetSettings)
    scheduling: policy.SchedulingSettings = field(default_factory=policy.SchedulingSettings)
    reconcile: recovery.ReconcileSettings = field(default_factory=recovery.ReconcileSettings)
    breaker: recovery.BreakerSettings = field(default_factory=recovery.BreakerSettings)
    # Every place (project, location) is listed this often for managed-by=tuningd jobs that no
    # tracked local job owns; duplicates and late landings are cancelled when cancel_unowned.
    sweep_interval_s: float = 300.0
    cancel_unowned: bool = True
    # Places swept even when no local job names them (e.g. after the database was lost).
    sweep_places: tuple[policy.Place, ...] = ()
    # Upper bound on how long the loop sleeps, so the watchdog sees progress while idle.
    tick_s: float = 1.0


def scope_label(scope: policy.Scope) -> str:
    """The `scope` label value of a limit scope in metrics."""
    return scope.kind.value if not scope.name else f"{scope.kind.value}:{scope.name}"


def _grpc_code(status: str) -> int:
    try:
        return int(Code[status])
    except KeyError:
        return int(Code.UNKNOWN)


class Engine:
    """The daemon's heart: accepts jobs, plans, calls Vertex, applies transitions, persists.

    All changes to a job go through `_commit` under one lock, so the in-memory working set (every
    non-terminal job) and SQLite never disagree, and a job is changed by one writer at a time.
    Remote calls run outside the lock; their results are applied to the job as it is *then*
    (a cancel may have arrived meanwhile), which the state machine is built for.
    """

    def __init__(self, store: Store, vertex: VertexClient, settings: EngineSettings, *,
                 metrics: Metrics | None = None, clock: Clock = time.time,
                 rng: random.Random | None = None,
                 on_progress: Callable[[], None] | None = None,
                 new_id: Callable[[], str] | None = None) -> None:
        self._store = store
        self._vertex = vertex
        self.settings = settings
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_progress = on_progress
        # Local job ids; injectable so that a simulation replays a seed exactly.
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        self._jobs: dict[str, Job] = {}
        self._counts: Counter[LocalState] = Counter()
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._adaptive = policy.AdaptiveLimits()
        self._budgets = policy.Budgets(settings.budget)
        self._batch_refused: set[str] = set()
        # Places whose creates are paused after a project-wide error.
        self._breaker = Breaker(lambda: self.settings.breaker, clock, self._rng, metrics)
        # Next sweep time per place; places with a sweep in flight.
        self._sweep_at: dict[policy.Place, float] = {}
        self._sweeping: set[policy.Place] = set()
        self._sweeper = Sweeper(
            list_place=self._list_labelled, cancel=self._cancel_remote, lookup=self._lookup,
            in_flight=self._busy.__contains__, adopt=self._adopt,
            cancel_unowned=lambda: self.settings.cancel_unowned, metrics=metrics, clock=clock)
        # History notes that could not be written (store errors), written with the next commit.
        self._store_notes: dict[str, list[str]] = {}
        # Creates in flight when a create got 429: the lowered cap already counts them, so their
        # success is no evidence of more room and must not raise the cap again.
        self._counted_in_cap: set[str] = set()
        self._queue_cache: _QueueCache | None = None
        self._accepting: dict[str, asyncio.Event] = {}
        self._version = 0
        self._started = False
        self.draining = False

    # ------------------------------------------------------------------ facade for the API

    async def submit(self, project: str, location: str, spec: Mapping[str, Any], *,
                     priority: int = 0, request_id: str | None = None) -> tuple[Job, bool]:
        """Store a validated TuningJob spec as a queued job (idempotent per request_id)."""
        if self.draining:
            raise errors.Unavailable("tuningd is shutting down; retry against the next instance.")
        now = self._clock()
        base_model = str(spec.get("baseModel")
                         or (spec.get("preTunedModel") or {}).get("tunedModelName") or "")
        job = Job(
            id=self._new_id(), project=project, location=location,
            spec_json=json.dumps(spec, sort_keys=True, separators=(",", ":")),
            base_model=base_model, state=LocalState.QUEUED, created_at=now, updated_at=now,
            priority=priority, request_id=request_id,
            display_name=str(spec.get("tunedModelDisplayName", "")), next_action_at=now,
        )
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
            if created:
                self._jobs[stored.id] = stored
                self._counts[stored.state] += 1
                self._version += 1
        finally:
            accepted.set()
            del self._accepting[job.id]
        if created:
            self._sweep_at.setdefault((project, location),
                                      now + self.settings.sweep_interval_s)
            log.info("job.accepted", job_id=stored.id, project=project, location=location,
                     base_model=base_model, priority=priority, request_id=request_id)
            if self._metrics is not None:
                self._metrics.set_job_counts(self._counts)
            if self._has_room():
                self._wakeup.set()
        return stored, created

    def _has_room(self) -> bool:
        """Whether the global limit could admit one more job (else waking the loop is waste)."""
        cap = self._adaptive.effective(policy.GLOBAL, self.settings.limits)
        active = sum(self._counts.get(state, 0) for state in ACTIVE_STATES)
        return cap is None or active < cap

    async def get(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None:
            return job
        try:
            return await self._store.get(job_id)
        except errors.StoreError as exc:
            self._store_failed("get", exc)
            raise

    async def history(self, job_id: str) -> list[JobEvent]:
        try:
            return await self._store.history(job_id)
        except errors.StoreError as exc:
            self._store_failed("history", exc)
            raise

    async def list_jobs(self, project: str, location: str, *, predicate: JobPredicate | None,
                        page_size: int, after_key: str | None,
                        states: frozenset[LocalState] | None = None,
                        labels: Mapping[str, str] | None = None) -> Page:
        """Newest first; keeps reading store pages until `page_size` jobs match.

        `states` / `labels` are necessary conditions of `predicate` (wire.filter_pushdown) that
        the store answers from its indexes, so a rare match does not read the whole history;
        `predicate` stays the final check. An empty `states` matches nothing."""
        if states is not None and not states:
            return Page([], None)
        out: list[Job] = []
        key = after_key
        batch_size = max(page_size, 100)
        while True:
            try:
                batch, next_key = await self._store.list_page(
                    project, location, states=states or None, after_key=key,
                    limit=batch_size, labels=labels or None)
            except errors.StoreError as exc:
                self._store_failed("list", exc)
                raise
            for i, job in enumerate(batch):
                job = self._jobs.get(job.id, job)
                if predicate is None or predicate(job):
                    out.append(job)
                    if len(out) == page_size:
                        more = i + 1 < len(batch) or next_key is not None
                        return Page(out, page_key(job) if more else None)
            if next_key is None:
                return Page(out, None)
            key = next_key

    async def cancel(self, job_id: str) -> Job:
        """Queued: cancelled at once. Active: the intent is stored and carried out by the loop."""
        accepting = self._accepting.get(job_id)
        if accepting is not None:
            await accepting.wait()
        async with self._lock:
            job = self._jobs.get(job_id) or await self._store.get(job_id)
            if job is None:
                raise errors.NotFound(f"The TuningJob {job_id} does not exist.")
            if job.state.is_terminal:
                raise errors.FailedPrecondition(
                    f"The tuning job {job_id} is already in a terminal state: "
                    f"{LOCAL_TO_REMOTE[job.state].value}.")
            tr = machine.apply(job, Event.cancel_requested(), self._clock())
            try:
                job = await self._commit_locked(tr)
            except errors.StoreError as exc:
                self._store_failed("cancel", exc)
                raise
        failpoints.hit("cancel.intent_written")
        self._wakeup.set()
        return job

    def queue_position(self, job: Job) -> int | None:
        """1-based place in the submission order; None unless queued.

        The order is re-sorted at most once a second (a long queue under a burst of creates
        would otherwise be re-sorted per request); a job newer than the sort is placed by a
        binary search on the sorted priorities, so positions may lag by up to a second.
        """
        if job.state is not LocalState.QUEUED:
            return None
        now = self._clock()
        cache = self._queue_cache
        if cache is None or (cache.version != self._version
                             and now - cache.computed_at >= _QUEUE_RESORT_S):
            order = policy.queue_order(self._jobs.values(), now, self.settings.scheduling)
            cache = self._queue_cache = _QueueCache(
                version=self._version, computed_at=now,
                positions={j.id: i + 1 for i, j in enumerate(order)},
                neg_priorities=[-policy.effective_priority(j, now, self.settings.scheduling)
                                for j in order])
        known = cache.positions.get(job.id)
        if known is not None:
            return known
        # Newer than every sorted job, so it goes after all those of equal or higher priority.
        ahead = bisect.bisect_right(
            cache.neg_priorities, -policy.effective_priority(job, now, self.settings.scheduling))
        return ahead + 1

    def ready(self) -> bool:
        return self._started and not self.draining

    def state_counts(self) -> dict[LocalState, int]:
        """Jobs per local state, as the engine tracks them (for status lines)."""
        return {state: self._counts.get(state, 0) for state in LocalState}

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
        self._counts = Counter(counts)
        in_flight: list[str] = []
        for job in jobs:
            if job.state in (LocalState.SUBMITTING, LocalState.PENDING, LocalState.RUNNING,
                             LocalState.CANCELLING) and job.next_action_at > now:
                # After a restart we do not know what happened meanwhile: look now.
                job = job.evolve(next_action_at=now)
                await self._store.update_job(job)
            self._jobs[job.id] = job
            if job.state is LocalState.SUBMITTING and (
                    job.attempt_ended_at is None or job.submit_started_at is None
                    or job.attempt_ended_at < job.submit_started_at):
                in_flight.append(job.id)
        for job_id in in_flight:
            await self._transition(job_id, Event.create_outcome_unknown(
                reconcile_at=now, error_message="the daemon stopped while this create was in "
                "flight"))
            self._count_unknown_outcome()
        for place in {*await self._store.places(), *self.settings.sweep_places}:
            self._sweep_at[place] = now
            self._breaker.known(place)
        self._version += 1
        self._started = True
        self._publish_counts()
        recovering = sum(1 for j in jobs if j.state is LocalState.SUBMITTING)
        log.info("engine.started", working_set=len(jobs), reconciling=recovering,
                 places=len(self._sweep_at))

    def paused_places(self) -> dict[policy.Place, recovery.Pause]:
        """Places whose creates are paused after a project-wide error (for views and status)."""
        return dict(self._breaker.pauses)

    def pause_for(self, job: Job) -> recovery.Pause | None:
        """The pause that holds this queued job back, if its place's creates are paused."""
        if job.state is not LocalState.QUEUED:
            return None
        return self._breaker.pauses.get((job.project, job.location))

    def reload(self, settings: EngineSettings) -> None:
        """Apply new limits and polling settings (SIGHUP); adaptive caps start afresh."""
        self.settings = settings
        for place in settings.sweep_places:
            self._sweep_at.setdefault(place, self._clock())
        self._adaptive = self._adaptive.reset()
        self._budgets = policy.Budgets(settings.budget)
        self._version += 1
        self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """The loop: plan, start the actions, sleep until something is due or happens."""
        while not stop.is_set():
            self._wakeup.clear()
            delay = self._iterate()
            if self._on_progress is not None:
                self._on_progress()
            if self._metrics is not None:
                self._metrics.loop_iteration()
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
        jobs = list(self._jobs.values())
        locations = {j.location for j in jobs} | {loc for _, loc in self._sweep_at}
        plan = policy.plan(
            jobs, now, limits=s.limits, adaptive=self._adaptive,
            budgets=self._budgets.snapshot(locations, now), scheduling=s.scheduling,
            polling=s.polling, batch_refused=frozenset(self._batch_refused),
            busy=frozenset(self._busy), accept_submits=not self.draining,
            paused=self._breaker.pauses,
            sweeps={p: t for p, t in self._sweep_at.items() if p not in self._sweeping},
        )
        for action in plan.actions:
            budget = self._budgets.location(action.location, now)
            took = (budget.take_create(now) if action.kind is policy.ActionKind.SUBMIT
                    else budget.take_request(now))
            if not took:
                continue
            if action.kind is policy.ActionKind.SUBMIT:
                self._breaker.probe_started(action.place)
            elif action.kind is policy.ActionKind.SWEEP:
                self._sweeping.add(action.place)
            self._busy.update(action.job_ids)
            target = action.job_ids[0] if action.job_ids else "/".join(action.place)
            task = asyncio.get_running_loop().create_task(self._execute(action),
                                                           name=f"{action.kind}:{target}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._publish_scopes(jobs)
        self._publish_oldest(jobs)
        delay = s.tick_s
        if plan.next_due_at is not None:
            delay = min(delay, max(0.0, plan.next_due_at - now))
        if plan.over_budget:
            waits = [self._budgets.location(loc, now).requests.seconds_until(now)
                     for loc in locations]
            delay = min(delay, max(0.05, min(waits, default=delay)))
        return delay

    async def _execute(self, action: policy.Action) -> None:
        try:
            handler = {
                policy.ActionKind.CANCEL: self._do_cancel,
                policy.ActionKind.SUBMIT: self._do_submit,
                policy.ActionKind.RECONCILE: self._do_reconcile,
                policy.ActionKind.POLL_LIST: self._do_poll_list,
                policy.ActionKind.POLL_GET: self._do_poll_get,
                policy.ActionKind.SWEEP: self._do_sweep,
            }[action.kind]
            await handler(action)
        except asyncio.CancelledError:
            raise
        except errors.StoreError as exc:
            # The disk is full or the database read-only: nothing of this action was stored.
            # Back off (in memory if need be) and leave a history note for when it works again.
            self._store_failed(action.kind.value, exc)
            for job_id in action.job_ids:
                self._store_notes.setdefault(job_id, []).append(
                    f"store error during {action.kind.value}, retried later: {exc.message}")
            await self._push_back(action.job_ids)
        except Exception:
            # A bug or a surprise in one job's handling must never stop the daemon; the job is
            # retried at its next due time, which the failed action did not move.
            log.exception("engine.action_failed", action=action.kind.value,
                          job_ids=list(action.job_ids))
            await self._push_back(action.job_ids)
        finally:
            self._busy.difference_update(action.job_ids)
            if action.kind is policy.ActionKind.SWEEP:
                self._sweeping.discard(action.place)
            self._wakeup.set()

    async def _push_back(self, job_ids: Sequence[str]) -> None:
        """Delay jobs whose action crashed, so a persistent bug does not become a hot loop."""
        now = self._clock()
        async with self._lock:
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is None:
                    continue
                later = job.evolve(next_action_at=policy.retry_at(job, now, self.settings.retry,
                                                                  self._rng),
                                   retry_count=job.retry_count + 1)
                # Scheduling is bookkeeping: kept in memory even when the store cannot take it,
                # so a failing disk slows the job down instead of spinning on it.
                self._jobs[job_id] = later
                try:
                    await self._store.update_job(later)
                except errors.TuningdError as exc:
                    log.warning("job.push_back_not_stored", job_id=job_id, error=exc.message)

    # ------------------------------------------------------------------ actions

    async def _do_submit(self, action: policy.Action) -> None:
        now = self._clock()
        job = await self._transition(action.job_id, Event.submit_started(next_action_at=now))
        if job is None or job.state is not LocalState.SUBMITTING:
            self._breaker.inconclusive(action.place)
            return
        failpoints.hit("submit.intent_written")
        body = job.spec
        body["labels"] = {**(body.get("labels") or {}),
                          LABEL_JOB_ID: job.id, LABEL_MANAGED_BY: MANAGED_BY_VALUE}
        bound = log.bind(job_id=job.id)
        try:
            failpoints.hit_soon("create.awaiting_reply", 0.1)
            remote = await self._vertex.create(job.project, job.location, body)
            failpoints.hit("create.reply_received")
        except RemoteError as exc:
            await self._create_failed(job, exc)
            return
        except Exception as exc:
            # Whatever broke, the POST may have reached Vertex: only reconciliation may tell.
            bound.exception("job.create_crashed")
            await self._create_failed(job, RemoteError(str(exc), http_status=500,
                                                       kind=vertex.UNKNOWN_OUTCOME))
            return
        self._answered(action.place)
        snapshot = RemoteSnapshot.from_json(remote)
        after = await self._transition(job.id, Event.create_succeeded(snapshot), schedule=True)
        self._create_resolved(job, succeeded=True)
        if self._metrics is not None and after is not None:
            self._metrics.observe_queue_wait(self._clock() - job.created_at)

    def _create_resolved(self, job: Job, *, succeeded: bool) -> None:
        """Adaptive limits learn from a create's outcome (a success may raise lowered caps)."""
        if job.id in self._counted_in_cap:
            self._counted_in_cap.discard(job.id)
            return
        if succeeded:
            self._adaptive = self._adaptive.on_create_succeeded(policy.scopes_of(job),
                                                                self.settings.limits)

    async def _create_failed(self, job: Job, exc: RemoteError) -> None:
        """Route a failed create: the job's own fault, the place's, a throttle, or unknown."""
        now = self._clock()
        s = self.settings
        place = (job.project, job.location)
        verdict = recovery.create_verdict(exc.http_status, exc.status, exc.kind)
        if verdict is not recovery.CreateVerdict.UNKNOWN:
            self._create_resolved(job, succeeded=False)
        if verdict is recovery.CreateVerdict.INVALID:
            self._breaker.inconclusive(place)
            await self._transition(job.id, Event.create_rejected(_grpc_code(exc.status),
                                                                 exc.message))
        elif verdict is recovery.CreateVerdict.PLACE_REFUSED:
            pause = self._breaker.refused(place, exc)
            self._version += 1
            await self._transition(job.id, Event.create_deferred(
                retry_at=pause.probe_at,
                error_message=f"{exc.status} for the whole project and location, creates "
                              f"paused: {exc.message}"))
        elif verdict is recovery.CreateVerdict.REJECTED:
            self._answered(place)
            await self._transition(job.id, Event.create_rejected(_grpc_code(exc.status),
                                                                 exc.message))
        elif verdict is recovery.CreateVerdict.THROTTLED:
            self._answered(place)
            # The throttled job goes back to queued: it must not count in the new cap.
            others = [j for j in self._jobs.values() if j.id != job.id]
            self._adaptive = self._adaptive.on_throttled(
                policy.scopes_of(job), policy.active_counts(others, self._busy - {job.id}))
            self._counted_in_cap.update(j.id for j in others
                                        if j.state is LocalState.SUBMITTING or j.id in self._busy)
            self._budgets.location(job.location, now).slow_down(now, create=True)
            await self._transition(job.id, Event.create_throttled(
                retry_at=policy.retry_at(job, now, s.retry, self._rng),
                error_message=exc.message))
        elif verdict is recovery.CreateVerdict.NOT_MADE:
            self._breaker.inconclusive(place)
            await self._transition(job.id, Event.create_deferred(
                retry_at=policy.retry_at(job, now, s.retry, self._rng),
                error_message=f"{exc.status}: {exc.message}"))
        else:
            # The POST may have reached Vertex: reconcile, never resubmit blind. A first look
            # right away adopts a job whose reply was lost; only "absent" has to wait.
            self._breaker.inconclusive(place)
            self._count_unknown_outcome()
            await self._transition(job.id, Event.create_outcome_unknown(
                reconcile_at=now, error_message=f"{exc.status}: {exc.message}"))

    def _answered(self, place: policy.Place) -> None:
        if self._breaker.answered(place):
            self._version += 1
            self._wakeup.set()

    async def _list_labelled(self, project: str, location: str, flt: str) -> JobList:
        """Every job matching a label filter; everything when the filter is refused (spec §8).

        Callers re-check labels client-side either way: the filter is not documented."""
        try:
            return await self._vertex.list_all(project, location, filter=flt)
        except RemoteError as exc:
            if exc.kind != vertex.PERMANENT or exc.http_status != 400:
                raise
            return await self._vertex.list_all(project, location)

    async def _do_reconcile(self, action: policy.Action) -> None:
        ids = list(action.job_ids)
        flt = " OR ".join(f'labels.{LABEL_JOB_ID}="{i}"' for i in ids)
        try:
            remotes = await self._list_labelled(action.project, action.location, flt)
        except RemoteError as exc:
            if exc.kind == vertex.INVALID_REQUEST:
                # Nothing can ever have been created under a parent that is no resource id.
                remotes = []
            else:
                self._count_reconciliation("error", len(ids))
                now = self._clock()
                for job_id in ids:
                    await self._transient(job_id, exc, now)
                return
        by_job: dict[str, list[dict[str, Any]]] = {}
        for remote in remotes:
            label = (remote.get("labels") or {}).get(LABEL_JOB_ID)
            if label in ids:  # the filter is not documented: re-check every result (spec §8)
                by_job.setdefault(str(label), []).append(remote)
        now = self._clock()
        for job_id in ids:
            job = self._jobs.get(job_id)
            if job is None or job.state is not LocalState.SUBMITTING:
                continue
            found = sorted(by_job.get(job_id, []), key=lambda r: str(r.get("createTime", "")))
            if found:
                if len(found) > 1:
                    await self._handle_duplicates(job, found[1:])
                self._count_reconciliation("found")
                await self._transition(job_id, Event.reconciled_found(
                    RemoteSnapshot.from_json(found[0])), schedule=True)
                self._create_resolved(job, succeeded=True)
                continue
            verdict = recovery.absence_verdict(job, now, self.settings.reconcile)
            if verdict.absent:
                self._count_reconciliation("absent")
                self._create_resolved(job, succeeded=False)
                await self._transition(job_id, Event.reconciled_absent(retry_at=now))
            else:
                await self._transition(job_id, Event.reconcile_empty(
                    checks=verdict.checks, next_check_at=verdict.next_check_at))

    async def _handle_duplicates(self, job: Job, extras: Sequence[Mapping[str, Any]]) -> None:
        """Should never happen; if it does, keep the oldest and cancel the rest, loudly."""
        for remote in extras:
            name = str(remote.get("name", ""))
            self._count_reconciliation("duplicate")
            self._sweeper.already_reported(name.rsplit("/", 1)[-1])
            log.error("job.duplicate_remote", job_id=job.id, remote_name=name)
            try:
                await self._vertex.cancel(name)
            except RemoteError as exc:
                log.error("job.duplicate_cancel_failed", job_id=job.id, remote_name=name,
                          status=exc.status, error=exc.message)

    async def _do_poll_list(self, action: policy.Action) -> None:
        try:
            remotes = await self._vertex.list_all(action.project, action.location,
                                                  filter=ACTIVE_REMOTE_FILTER)
        except RemoteError as exc:
            if exc.kind == vertex.PERMANENT and exc.http_status == 400:
                log.warning("engine.batch_poll_refused", location=action.location,
                            error=exc.message)
                self._batch_refused.add(action.location)
                for job_id in action.job_ids:
                    await self._poll_one(job_id)
                return
            now = self._clock()
            for job_id in action.job_ids:
                await self._transient(job_id, exc, now)
            return
        self._mark_poll_success()
        by_remote_id: dict[str, dict[str, Any]] = {}
        for remote in remotes:
            if (remote.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY_VALUE:
                by_remote_id[str(remote.get("name", "")).rsplit("/", 1)[-1]] = remote
        for job_id in action.job_ids:
            job = self._jobs.get(job_id)
            if job is None or job.remote_id is None:
                continue
            found = by_remote_id.get(job.remote_id)
            if found is None:
                # No longer active on Vertex: it ended (or vanished). One GET says which.
                await self._poll_one(job_id)
            else:
                await self._observe(job_id, found)

    async def _do_sweep(self, action: policy.Action) -> None:
        self._sweep_at[action.place] = self._clock() + self.settings.sweep_interval_s
        await self._sweeper.sweep(action.place)

    async def _cancel_remote(self, name: str) -> None:
        await self._vertex.cancel(name)

    async def _lookup(self, job_id: str) -> Job | None:
        """A job by local id: the working set first, then (ended jobs) the store."""
        return self._jobs.get(job_id) or await self._store.get(job_id)

    async def _adopt(self, job: Job, remote: RemoteSnapshot) -> bool:
        """The sweep found the remote job a queued or submitting job waits for: adopt it."""
        adopted = await self._transition(job.id, Event.reconciled_found(remote), schedule=True)
        if adopted is None or adopted.remote_id != remote.remote_id:
            return False
        if job.state is LocalState.SUBMITTING:
            self._create_resolved(job, succeeded=True)
        return True

    async def _do_poll_get(self, action: policy.Action) -> None:
        for job_id in action.job_ids:
            await self._poll_one(job_id)

    async def _poll_one(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.remote_name is None:
            return
        try:
            remote = await self._vertex.get(job.remote_name)
        except RemoteError as exc:
            if exc.http_status == 404:
                await self._not_found(job, exc)
            else:
                await self._transient(job_id, exc, self._clock())
            return
        self._mark_poll_success()
        await self._observe(job_id, remote)

    async def _not_found(self, job: Job, exc: RemoteError) -> None:
        """A read of the job's remote job said 404: recheck, then settle it by a label list."""
        now = self._clock()
        if recovery.after_not_found(job) is recovery.NotFoundStep.RECHECK_LATER:
            await self._transition(job.id, Event.remote_missing(
                recheck_at=now + self.settings.reconcile.not_found_confirm_s,
                error_message=exc.message))
            return
        try:
            remotes = await self._list_labelled(job.project, job.location,
                                                f'labels.{LABEL_JOB_ID}="{job.id}"')
        except RemoteError as list_exc:
            await self._transient(job.id, list_exc, now)
            return
        for remote in remotes:
            if str(remote.get("name", "")).rsplit("/", 1)[-1] == job.remote_id:
                await self._observe(job.id, remote)
                return
        await self._transition(job.id, Event.remote_not_found(exc.message))

    async def _do_cancel(self, action: policy.Action) -> None:
        job = self._jobs.get(action.job_id)
        if job is None or job.remote_name is None:
            return
        now = self._clock()
        initial = self.settings.polling.initial_interval_s
        try:
            await self._vertex.cancel(job.remote_name)
        except RemoteError as exc:
            if exc.http_status == 404:
                await self._not_found(job, exc)
            elif exc.kind == vertex.PERMANENT:
                # FAILED_PRECONDITION: it already ended. Stop asking, and poll to see how.
                await self._transition(job.id, Event.cancel_sent(
                    next_action_at=now, note=f"{exc.status}: {exc.message}"))
            else:
                await self._transient(job.id, exc, now)
            return
        failpoints.hit("cancel.sent")
        await self._transition(job.id, Event.cancel_sent(next_action_at=now + initial))

    # ------------------------------------------------------------------ applying results

    async def _observe(self, job_id: str, remote: Mapping[str, Any]) -> None:
        await self._transition(job_id, Event.remote_observed(RemoteSnapshot.from_json(remote)),
                               schedule=True)

    async def _transient(self, job_id: str, exc: RemoteError, now: float) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            return
        if exc.kind == "quota":
            self._budgets.location(job.location, now).slow_down(now)
        await self._transition(job_id, Event.transient_error(
            retry_at=policy.retry_at(job, now, self.settings.retry, self._rng),
            error_message=f"{exc.status}: {exc.message}"))

    async def _reschedule(self, job_id: str, at: float) -> None:
        async with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            later = job.evolve(next_action_at=at)
            await self._store.update_job(later)
            self._jobs[job_id] = later

    async def _transition(self, job_id: str, event: Event, *,
                          schedule: bool = False) -> Job | None:
        """Apply `event` to the job as it is now, persist, publish; None if the job is gone.

        With `schedule`, the next poll is set by the policy (interval reset after a change)."""
        async with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            now = self._clock()
            try:
                tr = machine.apply(job, event, now)
            except errors.IllegalTransition as exc:
                # A stale result (e.g. an observation after the job ended): drop it, loudly.
                log.warning("job.event_ignored", job_id=job_id, event=event.kind.value,
                            state=job.state.value, error=exc.message)
                return job
            if schedule and not tr.job.state.is_terminal:
                if tr.job.state is LocalState.CANCELLING and tr.job.cancel_sent_at is None:
                    pass  # the cancel itself is due now; the machine set that
                else:
                    sched = policy.schedule_poll(tr.job, tr.changed, now, self.settings.polling,
                                                 self._rng)
                    tr = tr.with_schedule(sched.next_poll_at, sched.interval_s)
            return await self._commit_locked(tr)

    async def _commit_locked(self, tr: Transition) -> Job:
        before, after = tr.before, tr.job
        notes = self._store_notes.get(after.id, [])
        if tr.changed or tr.state_changed or notes:
            detail: dict[str, Any] = {"event": tr.event.value}
            if after.remote_state:
                detail["remote_state"] = after.remote_state
            if after.remote_substate:
                detail["remote_substate"] = after.remote_substate
            noteworthy = tr.changed or tr.state_changed
            await self._store.apply(before, after, tr.reason if noteworthy else None, detail,
                                    notes=notes)
            self._store_notes.pop(after.id, None)
        elif after != before:
            await self._store.update_job(after)
        if after.state.is_terminal:
            self._jobs.pop(after.id, None)
        else:
            self._jobs[after.id] = after
        if tr.state_changed:
            self._counts[before.state] -= 1
            self._counts[after.state] += 1
            self._version += 1
        self._after_commit(tr)
        return after

    def _after_commit(self, tr: Transition) -> None:
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
            self._publish_counts()
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

    # ------------------------------------------------------------------ metrics

    def _publish_counts(self) -> None:
        m = self._metrics
        if m is None:
            return
        m.set_job_counts(self._counts)

    def _publish_oldest(self, jobs: Sequence[Job]) -> None:
        """Backlog age and longest run; once per loop round, since both scan every job."""
        m = self._metrics
        if m is None:
            return
        queued = [j.created_at for j in jobs if j.state is LocalState.QUEUED]
        m.set_oldest_queued(min(queued) if queued else 0.0)
        running = [j for j in jobs if j.state is LocalState.RUNNING]
        starts: list[float] = []
        for job in running:
            start = (job.remote or {}).get("startTime")
            if isinstance(start, str):
                try:
                    starts.append(wire.parse_timestamp(start))
                except errors.TuningdError:
                    continue
        m.set_oldest_running(min(starts) if starts else 0.0)

    def _publish_scopes(self, jobs: Sequence[Job]) -> None:
        m = self._metrics
        if m is None:
            return
        counts = policy.active_counts(jobs)
        scopes = {policy.GLOBAL, *counts.keys()}
        labels = []
        for scope in scopes:
            limit = self._adaptive.effective(scope, self.settings.limits)
            if limit is None:  # an unlimited scope has no limit series
                continue
            label = scope_label(scope)
            labels.append(label)
            m.set_active(label, counts.get(scope, 0), limit or 0)
        m.set_scopes(labels)

    def _mark_poll_success(self) -> None:
        if self._metrics is not None:
            self._metrics.mark_poll_success(self._clock())

    def _count_unknown_outcome(self) -> None:
        if self._metrics is not None:
            self._metrics.count_unknown_create_outcome()

    def _store_failed(self, operation: str, exc: errors.StoreError) -> None:
        """One log line and one count per store error (the disk is full, the db read-only)."""
        log.error("store.failed", operation=operation, error=exc.message)
        if self._metrics is not None:
            self._metrics.count_store_error("write" if exc.writing else "read")

    def _count_reconciliation(self, result: str, n: int = 1) -> None:
        if self._metrics is not None:
            for _ in range(n):
                self._metrics.count_reconciliation(result)
