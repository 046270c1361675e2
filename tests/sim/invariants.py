"""tuningd's promises as checks on the world: cheap ones after every step, full ones at the end.

Names (the summary counts failures by these): duplicate (1), limit (2), tracking / lost / stuck
(3: states match Vertex, no accepted job lost, every job ends), cancel (4), history (5), and
action_failed (an engine action raised; the engine survives it but the job may wedge).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tests.sim.world import World
from tuningd.core import limits
from tuningd.core.model import LABEL_JOB_ID, REMOTE_TO_LOCAL, Job, LocalState, Outcome
from tuningd.emulator.state import EmulatedJob
from tuningd.vertex import wire

ScopeKey = tuple[str, str]
GLOBAL: ScopeKey = ("global", "")


@dataclass(frozen=True)
class Violation:
    invariant: str
    message: str


@dataclass
class SimJob:
    """What the sim knows about a job it submitted (beyond what tuningd stores)."""

    id: str
    valid: bool  # Vertex would accept the create (valid place and spec)
    cancelled_in: LocalState | None = None  # state engine.cancel() returned, if cancelled
    cancelled_at_s: float | None = None


def configured_bounds(limits: limits.Limits) -> dict[ScopeKey, float]:
    bounds: dict[ScopeKey, float] = {GLOBAL: float(limits.max_active)}
    for loc, n in limits.per_location.items():
        bounds[("location", loc)] = float(n)
    for model, n in limits.per_base_model.items():
        bounds[("model", wire.base_model_id(model))] = float(n)
    return bounds


def remote_label(job: EmulatedJob) -> str | None:
    label = (job.spec.get("labels") or {}).get(LABEL_JOB_ID)
    return str(label) if label is not None else None


def _scopes(job: EmulatedJob) -> tuple[ScopeKey, ScopeKey, ScopeKey]:
    return (GLOBAL, ("location", job.location),
            ("model", wire.base_model_id(str(job.spec.get("baseModel", "")))))


def _expected_local(job: EmulatedJob) -> LocalState | None:
    return REMOTE_TO_LOCAL.get(job.state)


@dataclass
class Checker:
    """Holds what the checks need to remember between steps (bounds, cancels, duplicates)."""

    world: World
    jobs: dict[str, SimJob] = field(default_factory=dict)
    bounds: dict[ScopeKey, float] = field(default_factory=dict)
    # Lowered limits not binding yet: (new limit, creates in flight at the reload).
    lowering: dict[ScopeKey, tuple[float, frozenset[str]]] = field(default_factory=dict)
    duplicate_grace_s: float = 3600.0
    by_label: defaultdict[str, list[EmulatedJob]] = field(
        default_factory=lambda: defaultdict(list))
    reported: set[str] = field(default_factory=set)  # remote ids the engine flagged
    _remote_seen: int = 0
    _extra_since: dict[str, float] = field(default_factory=dict)  # awake time first seen extra
    _events_seen: int = 0

    def __post_init__(self) -> None:
        self.bounds = configured_bounds(self.world.settings.limits)

    # ------------------------------------------------------------------ bookkeeping

    def on_limits(self, limits: limits.Limits) -> None:
        """A raised limit binds at once. A lowered one binds once the remote count is down to
        it and every create already in flight at the reload (a `submitting` job) is resolved:
        tuningd cancels nothing to obey a new limit, and cannot recall a POST it has sent."""
        new = configured_bounds(limits)
        in_flight = frozenset(j.id for j in self.world.local.values()
                              if j.state is LocalState.SUBMITTING)
        for key in set(self.bounds) | set(self.lowering) | set(new):
            target = new.get(key, math.inf)
            if target >= self.bounds.get(key, math.inf):
                self.bounds[key] = target
                self.lowering.pop(key, None)
            else:
                self.lowering[key] = (target, in_flight)

    # ------------------------------------------------------------------ after every step

    def check_step(self) -> Violation | None:
        """Only what changed since the last step is looked at: jobs whose row was written,
        remote jobs created since, events logged since; limits from the live remote jobs."""
        world = self.world
        world.emulator.state.advance()
        fresh = self._index_remote()
        beyond = world.options.beyond_bounds
        active: Counter[ScopeKey] = Counter()
        for job in world.remote_live():
            if not (beyond and self.extra(job)):
                active.update(_scopes(job))
        touched = world.dirty | {label for label in (remote_label(j) for j in fresh) if label}
        world.dirty = set()
        found = self._extras() if beyond else self._duplicates(fresh)
        return (self._scan_events() or found or self._limits(active)
                or self._tracking(sorted(touched)))

    def extra(self, remote: EmulatedJob) -> str | None:
        """Why a remote job is one tuningd should not have (None: it is the job's own, or may
        still become it): a duplicate, a landing for a job requeued or ended without it."""
        label = remote_label(remote)
        local = self.world.local.get(label) if label is not None else None
        if local is None:
            return "unowned"
        if local.remote_id is not None:
            return None if local.remote_id == remote.job_id else "duplicate"
        if local.state is LocalState.QUEUED and local.attempts > 0:
            return "landed after its job was requeued"
        if local.state.is_terminal:
            return f"landed after its job ended {local.state.value}"
        # Still being created: the oldest may become the job's own, any later one is too many.
        return None if self.by_label[str(label)][0] is remote else "duplicate"

    def _extras(self) -> Violation | None:
        """Beyond the bounds: every extra remote job must be cancelled, or reported by the engine
        (job.duplicate_remote / sweep.unowned_remote_job), within the grace, counted in time
        the daemon was awake (a stalled loop cannot notice anything)."""
        awake = self.world.awake_s
        for remote in self.world.emulator.state.jobs.values():
            if remote.cancel_s is not None or remote.job_id in self.reported:
                continue
            why = self.extra(remote)
            if why is None:
                continue
            since = self._extra_since.setdefault(remote.job_id, awake)
            if awake - since > self.duplicate_grace_s:
                return Violation("duplicate", f"remote {remote.job_id} of {remote_label(remote)} "
                                              f"({why}) neither cancelled nor reported after "
                                              f"{self.duplicate_grace_s:g} s")
        return None

    def _index_remote(self) -> list[EmulatedJob]:
        jobs = self.world.emulator.state.jobs
        fresh = list(itertools.islice(jobs.values(), self._remote_seen, None))
        self._remote_seen = len(jobs)
        for job in fresh:
            label = remote_label(job)
            if label is not None:
                self.by_label[label].append(job)
        return fresh

    def _scan_events(self) -> Violation | None:
        events = self.world.events
        fresh, self._events_seen = events[self._events_seen:], len(events)
        for event in fresh:
            name = event.get("event")
            if name == "job.duplicate_remote" or name == "sweep.unowned_remote_job":
                self.reported.add(str(event.get("remote_name", "")).rsplit("/", 1)[-1])
            elif name == "engine.action_failed":
                return Violation("action_failed",
                                 f"{event.get('action')} {event.get('job_ids')} raised "
                                 f"{event.get('error', '?')}")
        return None

    def _duplicates(self, fresh: list[EmulatedJob]) -> Violation | None:
        for job in fresh:
            label = remote_label(job)
            if label is not None and len(self.by_label[label]) > 1:
                found = self.by_label[label]
                names = ", ".join(f"{j.job_id}({j.state.value[10:]})" for j in found)
                return Violation("duplicate", f"job {label} has {len(found)} remote jobs: "
                                              f"{names}")
        return None

    def _limits(self, active: Counter[ScopeKey]) -> Violation | None:
        for key in sorted(active):
            bound = self.bounds.get(key, math.inf)
            if active[key] > bound:
                kind, name = key
                scope = kind if not name else f"{kind} {name}"
                return Violation("limit", f"{active[key]} remote active jobs in scope {scope}, "
                                          f"limit {bound:g}")
        local = self.world.local
        for key, (target, in_flight) in sorted(self.lowering.items()):
            if active[key] <= target and not any(
                    local[i].state is LocalState.SUBMITTING for i in in_flight):
                self.bounds[key] = target
                del self.lowering[key]
        return None

    def _tracking(self, job_ids: list[str]) -> Violation | None:
        remote = self.world.emulator.state.jobs
        for job_id in job_ids:
            job = self.world.local.get(job_id)
            if job is None:
                continue  # a label no local job has (yet): the duplicate check covers it
            sim = self.jobs.get(job_id)
            labelled = self.by_label.get(job_id, [])
            beyond = self.world.options.beyond_bounds
            if (sim is not None and sim.cancelled_in is LocalState.CANCELLED and labelled
                    and not beyond):
                return Violation("cancel", f"job {job_id} was cancelled while queued but Vertex "
                                           f"has remote job {labelled[0].job_id}")
            if not job.state.is_terminal:
                continue
            if job.remote_id is not None:
                found = remote.get(job.remote_id)
                if found is None:
                    return Violation("tracking", f"job {job_id} ended {job.state.value} for "
                                                 f"remote {job.remote_id}, which Vertex lacks")
                expected = _expected_local(found)
                if not found.ended or expected is not job.state:
                    return Violation("tracking", f"job {job_id} ended {job.state.value} "
                                     f"({_outcome(job)}) but its remote {found.job_id} is "
                                     f"{found.state.value}")
            elif labelled and not beyond:
                v = "cancel" if job.outcome is Outcome.CANCELLED_LOCALLY else "tracking"
                return Violation(v, f"job {job_id} ended {job.state.value} ({_outcome(job)}) "
                                    f"without a remote job, but Vertex has "
                                    f"{labelled[0].job_id} ({labelled[0].state.value})")
        return None

    # ------------------------------------------------------------------ at the end

    async def check_end(self) -> Violation | None:
        world = self.world
        stored = {j.id: j for j in await world.store.list_jobs(limit=1_000_000)}
        for job_id in sorted(self.jobs):
            if job_id not in stored:
                return Violation("lost", f"accepted job {job_id} is not in the database")
        for job_id, job in sorted(stored.items()):
            if world.local.get(job_id) != job:
                return Violation("sim", f"the sim's mirror of {job_id} differs from SQLite")
        world.dirty |= set(stored)
        step = self.check_step()
        if step is not None:
            return step
        by_label = self.by_label
        stuck = sorted(f"{j.id}:{j.state.value}" for j in stored.values()
                       if not j.state.is_terminal)
        if stuck:
            return Violation("stuck", f"{len(stuck)} job(s) never ended: {', '.join(stuck[:8])}")
        alive = sorted(f"{j.job_id}:{j.state.value}" for j in world.emulator.state.jobs.values()
                       if not j.ended)
        if alive:
            return Violation("stuck", f"remote jobs still active: {', '.join(alive[:8])}")
        return (self._outcomes(stored, by_label) or self._cancels(stored, by_label)
                or await self._histories(stored))

    def _outcomes(self, stored: dict[str, Job],
                  by_label: dict[str, list[EmulatedJob]]) -> Violation | None:
        for job_id, sim in sorted(self.jobs.items()):
            job = stored[job_id]
            labelled = by_label.get(job_id, [])
            if not sim.valid:
                if labelled:
                    return Violation("tracking", f"job {job_id} is invalid for Vertex but has "
                                                 f"remote job {labelled[0].job_id}")
                if job.state is not LocalState.FAILED and not (
                        job.state is LocalState.CANCELLED and sim.cancelled_in is not None):
                    return Violation("lost", f"invalid job {job_id} ended {job.state.value} "
                                             f"({_outcome(job)}), not failed")
                continue
            if job.remote_id is None and sim.cancelled_in is None:
                return Violation("lost", f"valid job {job_id} ended {job.state.value} "
                                         f"({_outcome(job)}) without ever reaching Vertex: "
                                         f"{job.error_message}")
        return None

    def _cancels(self, stored: dict[str, Job],
                 by_label: dict[str, list[EmulatedJob]]) -> Violation | None:
        for job_id, sim in sorted(self.jobs.items()):
            if sim.cancelled_in is None or sim.cancelled_in is LocalState.CANCELLED:
                continue
            job = stored[job_id]
            labelled = by_label.get(job_id, [])
            if not labelled:
                if job.state not in (LocalState.CANCELLED, LocalState.FAILED):
                    return Violation("cancel", f"job {job_id} cancelled in "
                                     f"{sim.cancelled_in.value}, no remote job, ended "
                                     f"{job.state.value} ({_outcome(job)})")
                continue
            for remote in labelled:
                if remote.cancel_s is not None:
                    continue
                if self.world.options.beyond_bounds and self.extra(remote) is not None:
                    continue  # judged by _extras: cancelled or reported in time
                # It ended before a cancel reached it: fine if the job says so.
                if job.outcome not in (Outcome.COMPLETED_DESPITE_CANCEL,
                                       Outcome.FAILED_DESPITE_CANCEL):
                    return Violation("cancel", f"job {job_id} cancelled in "
                                     f"{sim.cancelled_in.value}: remote {remote.job_id} never got "
                                     f"a cancel and ended {remote.state.value}; local "
                                     f"{job.state.value} ({_outcome(job)})")
        return None

    async def _histories(self, stored: dict[str, Job]) -> Violation | None:
        for job_id, job in sorted(stored.items()):
            rows = await self.world.store.history(job_id)
            if not rows:
                return Violation("history", f"job {job_id} has no history")
            first = rows[0]
            if (first.from_state, first.to_state, first.reason) != (
                    None, LocalState.QUEUED, "accepted"):
                return Violation("history", f"job {job_id} starts with {first.from_state} -> "
                                            f"{first.to_state} ({first.reason})")
            for before, after in itertools.pairwise(rows):
                if before.to_state.is_terminal:
                    return Violation("history", f"job {job_id}: row {after.seq} after terminal "
                                                f"{before.to_state.value}")
                if after.from_state is not before.to_state:
                    return Violation("history", f"job {job_id}: row {after.seq} from "
                                     f"{after.from_state} but previous ended {before.to_state}")
            if rows[-1].to_state is not job.state:
                return Violation("history", f"job {job_id}: history ends {rows[-1].to_state}, "
                                            f"job is {job.state.value}")
        return None


def _outcome(job: Job) -> str:
    return job.outcome.value if job.outcome is not None else "-"
