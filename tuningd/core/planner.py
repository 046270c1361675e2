"""The plan: jobs, limits, budgets and `now` in; the actions due now and when to look again out."""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from tuningd.config import PollingSettings, SchedulingSettings
from tuningd.core.budget import BudgetSnapshot
from tuningd.core.limits import GLOBAL, AdaptiveLimits, Limits, Scope, active_counts, scopes_of
from tuningd.core.model import REMOTE_STATES, Job, LocalState
from tuningd.core.recovery import Pause
from tuningd.core.workset import QueueGroup, SortKey, WorkingSet, sort_key


class ActionKind(StrEnum):
    CANCEL = "cancel"
    SUBMIT = "submit"
    RECONCILE = "reconcile"
    POLL_LIST = "poll_list"
    POLL_GET = "poll_get"
    SWEEP = "sweep"


# Execution order inside one location's budget (design §4): cancel, create, then reads.
_ORDER = {ActionKind.CANCEL: 0, ActionKind.SUBMIT: 1, ActionKind.RECONCILE: 2,
          ActionKind.POLL_LIST: 3, ActionKind.POLL_GET: 3, ActionKind.SWEEP: 4}

Place = tuple[str, str]  # (project, location)


@dataclass(frozen=True)
class Action:
    """One remote call for the engine. POLL_LIST and RECONCILE cover several jobs in one list;
    SWEEP covers a whole (project, location) and no job in particular."""

    kind: ActionKind
    project: str
    location: str
    job_ids: tuple[str, ...]

    @property
    def job_id(self) -> str:
        return self.job_ids[0]

    @property
    def place(self) -> Place:
        return (self.project, self.location)


@dataclass(frozen=True)
class Plan:
    """What to do now, in execution order, and when something next becomes due."""

    actions: tuple[Action, ...]
    # Due but held back by the location's request budget (retry when tokens are back).
    over_budget: tuple[str, ...] = ()
    # Queued and due, but a scope is full: the head of each group held back (its other jobs
    # wait with it); empty when the global scope is full, since the queue is not read then.
    waiting_for_slot: tuple[str, ...] = ()
    # Queued and due, but creates to their place are paused (see recovery.Pause).
    paused: tuple[str, ...] = ()
    # Earliest next_action_at among jobs not due now (None: nothing scheduled).
    next_due_at: float | None = None

    def of_kind(self, kind: ActionKind) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.kind is kind)

    @property
    def submits(self) -> tuple[str, ...]:
        return tuple(a.job_id for a in self.of_kind(ActionKind.SUBMIT))

    @property
    def cancels(self) -> tuple[str, ...]:
        return tuple(a.job_id for a in self.of_kind(ActionKind.CANCEL))


class QueueView(Protocol):
    """The queued jobs as the planner reads them (workset.WorkingSet is one)."""

    @property
    def groups(self) -> Mapping[tuple[str, str, str], QueueGroup]: ...

    def queued(self, job_id: str) -> Job | None: ...


def _needs_cancel(job: Job) -> bool:
    return (job.state is LocalState.CANCELLING and job.cancel_requested
            and job.cancel_sent_at is None)


class _Spend:
    """The planner's local copy of the location budgets (None: unlimited)."""

    def __init__(self, budgets: Mapping[str, BudgetSnapshot] | None) -> None:
        self._left = (None if budgets is None
                      else {k: [v.requests, v.creates] for k, v in budgets.items()})

    def request(self, location: str) -> bool:
        if self._left is None:
            return True
        left = self._left.setdefault(location, [0, 0])
        if left[0] < 1:
            return False
        left[0] -= 1
        return True

    def create(self, location: str) -> bool:
        if self._left is None:
            return True
        left = self._left.setdefault(location, [0, 0])
        if left[0] < 1 or left[1] < 1:
            return False
        left[0] -= 1
        left[1] -= 1
        return True


def plan(jobs: Sequence[Job], now: float, *,
         limits: Limits,
         adaptive: AdaptiveLimits | None = None,
         budgets: Mapping[str, BudgetSnapshot] | None = None,
         scheduling: SchedulingSettings | None = None,
         polling: PollingSettings | None = None,
         batch_refused: AbstractSet[str] = frozenset(),
         busy: AbstractSet[str] = frozenset(),
         accept_submits: bool = True,
         paused: Mapping[Place, Pause] | None = None,
         sweeps: Mapping[Place, float] | None = None,
         queue: QueueView | None = None) -> Plan:
    """Decide the remote calls to make now.

    `jobs` are all non-terminal jobs; or, when `queue` is given, the jobs that are not queued
    (the queued ones are in `queue`, grouped: a round then costs the jobs that can act, not the
    length of the queue). `busy` holds ids with a call in flight (skipped, but still
    counted against limits; a busy queued job is a create under way and counts as active).
    `batch_refused` holds locations where the list filter was refused (per-job GETs there).
    `budgets` None means unlimited. `paused` holds places whose creates are paused: their jobs
    wait, except one probe create per place once its `probe_at` has come. `sweeps` maps each
    place to its next sweep time (places with a sweep in flight left out). Within a location,
    cancels are budgeted first, then creates, then reconciles, polls and sweeps; the returned
    actions follow that order.
    """
    scheduling = scheduling or SchedulingSettings()
    polling = polling or PollingSettings()
    adaptive = adaptive or AdaptiveLimits()
    paused = paused or {}
    if queue is None:
        queue = WorkingSet()
        for job in jobs:
            queue[job.id] = job
        jobs = list(queue.active.values())
    spend = _Spend(budgets)
    cancels: list[Action] = []
    submits: list[Action] = []
    reads: list[Action] = []
    over_budget: list[str] = []
    waiting: list[str] = []
    blocked: list[str] = []
    future: list[float] = []

    # 1. Cancels first: they free quota and are what a user asked for.
    for job in sorted(jobs, key=lambda j: (j.next_action_at, j.id)):
        if job.id in busy or not _needs_cancel(job):
            continue
        if job.next_action_at > now:
            future.append(job.next_action_at)
        elif spend.request(job.location):
            cancels.append(Action(ActionKind.CANCEL, job.project, job.location, (job.id,)))
        else:
            over_budget.append(job.id)

    # 2. Creates, by effective priority, each only if all its scopes have room. Jobs picked in
    # this plan count as active; a job held back only by budget keeps its slots reserved so a
    # lower-priority job cannot take them for hours while it waits seconds for a token.
    counts = active_counts(jobs, busy)
    for job_id in busy:
        held = queue.queued(job_id)
        if held is not None:  # a create under way: it counts as active
            for scope in scopes_of(held):
                counts[scope] = counts.get(scope, 0) + 1
    _plan_creates(queue, now, counts=counts, limits=limits, adaptive=adaptive,
                  scheduling=scheduling, busy=busy, accept_submits=accept_submits,
                  paused=paused, spend=spend, out=_CreateOut(submits, over_budget, waiting,
                                                             blocked, future))

    # 3. Reconciles: submitting jobs (not in flight) once due. How long to wait before an empty
    # list counts is recovery.absence_verdict's business; the planner only honours the time.
    recon: dict[tuple[str, str], list[str]] = defaultdict(list)
    for job in sorted(jobs, key=lambda j: (j.next_action_at, j.id)):
        if job.state is not LocalState.SUBMITTING or job.id in busy:
            continue
        if job.next_action_at > now:
            future.append(job.next_action_at)
        else:
            recon[(job.project, job.location)].append(job.id)
    for (project, location), ids in sorted(recon.items()):
        if spend.request(location):
            reads.append(Action(ActionKind.RECONCILE, project, location, tuple(ids)))
        else:
            over_budget.extend(ids)

    # 4. Polls: when a job of a (project, location) is due and listing works there, one list
    # call refreshes it and the others in the coalesce window, if that makes >= batch_min_jobs.
    remote = [j for j in jobs
              if j.state in REMOTE_STATES and j.id not in busy and not _needs_cancel(j)]
    by_place: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for job in sorted(remote, key=lambda j: (j.next_action_at, j.id)):
        by_place[(job.project, job.location)].append(job)
    for (project, location), group in sorted(by_place.items()):
        due = [j for j in group if j.next_action_at <= now]
        later = [j.next_action_at for j in group if j.next_action_at > now]
        if not due:
            future.extend(later)
            continue
        horizon = now + polling.effective_coalesce_s
        # A job whose remote job answered 404 is settled by a GET (then a label list).
        batch = [j for j in group if j.next_action_at <= horizon and not j.missing_checks]
        if len(batch) >= polling.batch_min_jobs and location not in batch_refused:
            future.extend(j.next_action_at for j in group
                          if j.next_action_at > horizon
                          or (j.missing_checks and j.next_action_at > now))
            if spend.request(location):
                reads.append(Action(ActionKind.POLL_LIST, project, location,
                                    tuple(j.id for j in batch)))
            else:
                over_budget.extend(j.id for j in due)
            due = [j for j in due if j.missing_checks]
        else:
            future.extend(later)
        for job in due:
            if spend.request(location):
                reads.append(Action(ActionKind.POLL_GET, project, location, (job.id,)))
            else:
                over_budget.append(job.id)

    # 5. Sweeps: one list per place, whatever its jobs are doing (budget permitting; a sweep
    # that must wait for a token simply runs in a later round).
    for (project, location), due_at in sorted((sweeps or {}).items()):
        if due_at > now:
            future.append(due_at)
        elif spend.request(location):
            reads.append(Action(ActionKind.SWEEP, project, location, ()))

    actions = sorted([*cancels, *submits, *reads], key=lambda a: (_ORDER[a.kind]))
    return Plan(actions=tuple(actions), over_budget=tuple(over_budget),
                waiting_for_slot=tuple(waiting), paused=tuple(blocked),
                next_due_at=min(future) if future else None)


@dataclass(frozen=True)
class _CreateOut:
    submits: list[Action]
    over_budget: list[str]
    waiting: list[str]
    blocked: list[str]
    future: list[float]


def _plan_creates(queue: QueueView, now: float, *, counts: dict[Scope, int], limits: Limits,
                  adaptive: AdaptiveLimits, scheduling: SchedulingSettings,
                  busy: AbstractSet[str], accept_submits: bool, paused: Mapping[Place, Pause],
                  spend: _Spend, out: _CreateOut) -> None:
    """Walk the queue in order by merging the heads of its groups; a group whose scopes are
    full, or whose place is paused, is left at its head (every job in it would wait the same),
    and nothing is walked while the global scope is full: the cost is the jobs that can act."""
    caps: dict[Scope, int | None] = {}

    def full(scope: Scope) -> bool:
        if scope not in caps:
            caps[scope] = adaptive.effective(scope, limits)
        cap = caps[scope]
        return cap is not None and counts.get(scope, 0) >= cap

    if full(GLOBAL):
        # Every queued job waits for a slot, whatever its due time; a slot that frees wakes
        # the engine. Nothing of the queue is read.
        return
    groups = list(queue.groups.values())

    heap: list[tuple[SortKey, int, Job, Iterator[Job]]] = []

    def push(i: int, jobs: Iterator[Job]) -> None:
        for job in jobs:
            heapq.heappush(heap, (sort_key(job, now, scheduling), i, job, jobs))
            return

    for i, group in enumerate(groups):
        push(i, group.ordered(now, scheduling))
    probing: set[Place] = set()
    while heap:
        _, i, job, rest = heapq.heappop(heap)
        if job.id in busy:
            push(i, rest)
            continue
        scopes = scopes_of(job)
        if full(scopes[0]):
            # Every queued job waits for a slot; a slot that frees wakes the engine.
            out.waiting.append(job.id)
            return
        if job.next_action_at > now:
            out.future.append(job.next_action_at)
            push(i, rest)
            continue
        place = (job.project, job.location)
        pause = paused.get(place)
        # Only the queue head of a paused place may probe, once its time has come.
        if pause is not None and (pause.probing or place in probing or pause.probe_at > now):
            if not pause.probing and pause.probe_at > now:
                out.future.append(pause.probe_at)
            out.blocked.append(job.id)
            continue  # the whole group waits with its head
        if not accept_submits or any(full(scope) for scope in scopes):
            out.waiting.append(job.id)
            continue  # the group's other jobs share these scopes
        for scope in scopes:
            counts[scope] = counts.get(scope, 0) + 1
        if pause is not None:
            probing.add(place)
        if spend.create(job.location):
            out.submits.append(Action(ActionKind.SUBMIT, job.project, job.location, (job.id,)))
        else:
            out.over_budget.append(job.id)
        push(i, rest)
