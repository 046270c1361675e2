"""The job state machine: a pure (state, event) -> state table and apply(); no I/O, no clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from tuningd.core.errors import Code, IllegalTransition
from tuningd.core.model import (
    REMOTE_TO_LOCAL,
    Job,
    LocalState,
    Outcome,
)

# Re-exported: callers build their events' snapshots from here.
from tuningd.core.snapshot import RemoteSnapshot as RemoteSnapshot


class EventKind(StrEnum):
    """Everything that can happen to a job; persisted in history reasons, so names are stable."""

    SUBMIT_STARTED = "submit_started"
    CREATE_SUCCEEDED = "create_succeeded"
    CREATE_REJECTED = "create_rejected"
    CREATE_THROTTLED = "create_throttled"
    CREATE_OUTCOME_UNKNOWN = "create_outcome_unknown"
    CREATE_DEFERRED = "create_deferred"
    RECONCILE_EMPTY = "reconcile_empty"
    RECONCILED_FOUND = "reconciled_found"
    RECONCILED_ABSENT = "reconciled_absent"
    CANCEL_REQUESTED = "cancel_requested"
    CANCEL_SENT = "cancel_sent"
    REMOTE_OBSERVED = "remote_observed"
    REMOTE_MISSING = "remote_missing"
    REMOTE_NOT_FOUND = "remote_not_found"
    TRANSIENT_ERROR = "transient_error"


@dataclass(frozen=True)
class Event:
    """One input to the machine. Build it with the class methods, which name the required data.

    `next_action_at`, when given, is stored on the job (the policy computed it); otherwise the
    machine leaves the schedule alone, except that a fresh cancel intent is due at once.
    An event with an `error_code` (a google.rpc code) is an error: apply() records it on the job
    as its last error (code, message, the event's time). A cancel's note has no code: "already
    ended" is an answer, not a trouble.
    """

    kind: EventKind
    remote: RemoteSnapshot | None = None
    error_code: int | None = None
    error_message: str | None = None
    next_action_at: float | None = None
    poll_interval_s: float | None = None
    # RECONCILE_EMPTY: the job's consecutive empty reconcile lists after this one.
    checks: int | None = None

    @classmethod
    def submit_started(cls, *, next_action_at: float | None = None) -> Event:
        return cls(EventKind.SUBMIT_STARTED, next_action_at=next_action_at)

    @classmethod
    def create_succeeded(cls, remote: RemoteSnapshot, *,
                         next_action_at: float | None = None,
                         poll_interval_s: float | None = None) -> Event:
        return cls(EventKind.CREATE_SUCCEEDED, remote=remote, next_action_at=next_action_at,
                   poll_interval_s=poll_interval_s)

    @classmethod
    def create_rejected(cls, error_code: int, error_message: str) -> Event:
        """`error_code` is the canonical google.rpc code (as inside TuningJob.error)."""
        return cls(EventKind.CREATE_REJECTED, error_code=error_code, error_message=error_message)

    @classmethod
    def create_throttled(cls, *, retry_at: float, error_message: str = "",
                         error_code: int = int(Code.RESOURCE_EXHAUSTED)) -> Event:
        return cls(EventKind.CREATE_THROTTLED, next_action_at=retry_at, error_code=error_code,
                   error_message=error_message or None)

    @classmethod
    def create_outcome_unknown(cls, *, reconcile_at: float, error_message: str = "",
                               error_code: int = int(Code.UNKNOWN)) -> Event:
        """The create may or may not have reached Vertex; the attempt ends now."""
        return cls(EventKind.CREATE_OUTCOME_UNKNOWN, next_action_at=reconcile_at,
                   error_code=error_code, error_message=error_message or None)

    @classmethod
    def create_deferred(cls, *, retry_at: float, error_message: str,
                        error_code: int = int(Code.UNAVAILABLE)) -> Event:
        """The create definitely did not happen and the job is fine: back to the queue."""
        return cls(EventKind.CREATE_DEFERRED, next_action_at=retry_at, error_code=error_code,
                   error_message=error_message)

    @classmethod
    def reconcile_empty(cls, *, checks: int, next_check_at: float) -> Event:
        """A reconcile list found no remote job, which does not prove absence yet."""
        return cls(EventKind.RECONCILE_EMPTY, checks=checks, next_action_at=next_check_at)

    @classmethod
    def reconciled_found(cls, remote: RemoteSnapshot, *,
                         next_action_at: float | None = None,
                         poll_interval_s: float | None = None) -> Event:
        return cls(EventKind.RECONCILED_FOUND, remote=remote, next_action_at=next_action_at,
                   poll_interval_s=poll_interval_s)

    @classmethod
    def reconciled_absent(cls, *, retry_at: float | None = None) -> Event:
        return cls(EventKind.RECONCILED_ABSENT, next_action_at=retry_at)

    @classmethod
    def cancel_requested(cls) -> Event:
        return cls(EventKind.CANCEL_REQUESTED)

    @classmethod
    def cancel_sent(cls, *, next_action_at: float | None = None, note: str = "") -> Event:
        """`note` explains an unusual answer, e.g. FAILED_PRECONDITION (the job already ended)."""
        return cls(EventKind.CANCEL_SENT, next_action_at=next_action_at,
                   error_message=note or None)

    @classmethod
    def remote_observed(cls, remote: RemoteSnapshot, *,
                        next_action_at: float | None = None,
                        poll_interval_s: float | None = None) -> Event:
        return cls(EventKind.REMOTE_OBSERVED, remote=remote, next_action_at=next_action_at,
                   poll_interval_s=poll_interval_s)

    @classmethod
    def remote_missing(cls, *, recheck_at: float, error_message: str) -> Event:
        """A read answered 404; believed only once it repeats and a list agrees."""
        return cls(EventKind.REMOTE_MISSING, next_action_at=recheck_at,
                   error_code=int(Code.NOT_FOUND), error_message=error_message)

    @classmethod
    def remote_not_found(cls, error_message: str = "remote job not found") -> Event:
        return cls(EventKind.REMOTE_NOT_FOUND, error_code=int(Code.NOT_FOUND),
                   error_message=error_message)

    @classmethod
    def transient_error(cls, *, retry_at: float, error_message: str = "",
                        error_code: int = int(Code.UNAVAILABLE)) -> Event:
        return cls(EventKind.TRANSIENT_ERROR, next_action_at=retry_at, error_code=error_code,
                   error_message=error_message or None)


# Fields that are bookkeeping, not news: a change only in these is not "changed" (no history
# row, no poll-interval reset). The raw remote JSON is stored but is not news by itself: progress
# counters (v1beta1 tuningJobMetadata) move on every poll while tuning, and Vertex states real
# changes through state, sub-state and updateTime, which are content fields. The last error is
# shown, not news either: a retried fault would otherwise write a history row per retry.
_BOOKKEEPING_FIELDS = frozenset({"updated_at", "next_action_at", "poll_interval_s", "retry_count",
                                 "remote_json", "last_error_code", "last_error_message",
                                 "last_error_at"})
_CONTENT_FIELDS = tuple(f.name for f in fields(Job) if f.name not in _BOOKKEEPING_FIELDS)


@dataclass(frozen=True)
class Transition:
    """The result of one apply(): the new job and what to write into the history."""

    before: Job
    job: Job
    event: EventKind
    reason: str

    @property
    def from_state(self) -> LocalState:
        return self.before.state

    @property
    def to_state(self) -> LocalState:
        return self.job.state

    @property
    def state_changed(self) -> bool:
        return self.before.state is not self.job.state

    @property
    def changed(self) -> bool:
        """True when anything but scheduling bookkeeping changed (drives poll-interval reset)."""
        return any(getattr(self.before, n) != getattr(self.job, n) for n in _CONTENT_FIELDS)

    def with_schedule(self, next_action_at: float,
                      poll_interval_s: float | None = None) -> Transition:
        """The same transition with the policy's schedule stored on the job."""
        changes: dict[str, Any] = {"next_action_at": next_action_at}
        if poll_interval_s is not None:
            changes["poll_interval_s"] = poll_interval_s
        return Transition(self.before, self.job.evolve(**changes), self.event, self.reason)


# A handler returns the changed fields (without updated_at) and the history reason.
Handler = Callable[[Job, Event, float], tuple[dict[str, Any], str]]

_ALL_REMOTE_TARGETS = frozenset({
    LocalState.PENDING, LocalState.RUNNING, LocalState.CANCELLING,
    LocalState.SUCCEEDED, LocalState.FAILED, LocalState.CANCELLED,
})


def _need_remote(event: Event) -> RemoteSnapshot:
    if event.remote is None:
        raise ValueError(f"{event.kind} needs a RemoteSnapshot")
    return event.remote


def _with_note(reason: str, event: Event) -> str:
    return f"{reason}: {event.error_message}" if event.error_message else reason


def last_error(event: Event, now: float) -> dict[str, Any]:
    """The job fields that record an error event as the job's last error ({} for no error).

    A message that repeats its status name in front ("UNAVAILABLE: ...") is kept without it:
    the code says it. Never cleared by later success: the time says how old it is."""
    if event.error_code is None:
        return {}
    message = event.error_message or ""
    try:
        prefix = f"{Code(event.error_code).name}: "
    except ValueError:
        prefix = ""
    if prefix and message.startswith(prefix):
        message = message[len(prefix):]
    return {"last_error_code": event.error_code, "last_error_message": message,
            "last_error_at": now}


def _adopt(job: Job, remote: RemoteSnapshot, now: float, verb: str) -> tuple[dict[str, Any], str]:
    """Fold one remote observation into the job (shared by create, reconcile and poll)."""
    js = remote.job_state
    mapped = REMOTE_TO_LOCAL.get(js) if js is not None else None
    changes: dict[str, Any] = {
        "remote_name": remote.name,
        "remote_state": remote.state,
        "remote_substate": remote.substate,
        "remote_update_time": remote.update_time,
        "missing_checks": 0,
        "absent_checks": 0,
    }
    if remote.json_text is not None:
        changes["remote_json"] = remote.json_text
    detail = remote.state + (f"/{remote.substate}" if remote.substate else "")
    if mapped is None:
        # UNSPECIFIED or a state newer than this code: never guess an end, keep the job active.
        mapped = (LocalState.PENDING if job.state in (LocalState.SUBMITTING, LocalState.QUEUED)
                  else job.state)
        detail = f"{detail} (not understood, kept active)"
    if job.cancel_requested and mapped in (LocalState.PENDING, LocalState.RUNNING):
        # Cancel is wanted: the job stays (or becomes) cancelling until Vertex ends it.
        changes["state"] = LocalState.CANCELLING
        if job.state is not LocalState.CANCELLING:
            changes["next_action_at"] = now
            return changes, f"{verb}: remote {detail}; cancel was requested, cancelling"
        return changes, f"{verb}: remote {detail}, cancel pending"
    changes["state"] = mapped
    if mapped.is_terminal:
        changes["ended_at"] = now
        if mapped in (LocalState.FAILED, LocalState.CANCELLED):
            changes["error_code"] = remote.error_code
            changes["error_message"] = remote.error_message
        outcome = Outcome.NORMAL
        if job.cancel_requested and mapped is LocalState.SUCCEEDED:
            outcome = Outcome.COMPLETED_DESPITE_CANCEL
        elif job.cancel_requested and mapped is LocalState.FAILED:
            outcome = Outcome.FAILED_DESPITE_CANCEL
        changes["outcome"] = outcome
        suffix = "" if outcome is Outcome.NORMAL else f" ({outcome.value.replace('_', ' ')})"
        err = f": {remote.error_message}" if "error_message" in changes and remote.error_message \
            else ""
        return changes, f"{verb}: remote {detail}{suffix}{err}"
    return changes, f"{verb}: remote {detail}"


def _submit_started(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    attempt = job.attempts + 1
    return ({"state": LocalState.SUBMITTING, "attempts": attempt, "submit_started_at": now},
            f"create attempt {attempt} started")


def _created(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    changes, reason = _adopt(job, _need_remote(event), now, "created")
    changes["submitted_at"] = now
    changes["retry_count"] = 0
    return changes, reason


def _reconciled_found(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    changes, reason = _adopt(job, _need_remote(event), now, "reconciled, remote job adopted")
    changes["submitted_at"] = job.submitted_at if job.submitted_at is not None else now
    changes["retry_count"] = 0
    return changes, reason


def _rejected(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    return ({"state": LocalState.FAILED, "ended_at": now, "outcome": Outcome.REJECTED,
             "error_code": event.error_code, "error_message": event.error_message},
            _with_note("create rejected", event))


def _no_remote_job(job: Job, event: Event, now: float, why: str) -> tuple[dict[str, Any], str]:
    """Vertex definitely has no job for this one: requeue, or finish a pending cancel locally."""
    if job.cancel_requested:
        return ({"state": LocalState.CANCELLED, "ended_at": now,
                 "outcome": Outcome.CANCELLED_LOCALLY},
                f"{why}; cancel was requested, cancelled without a remote job")
    return {"state": LocalState.QUEUED}, f"{why}; back to queue"


def _throttled(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    changes, reason = _no_remote_job(job, event, now, _with_note("create throttled (429)", event))
    if changes["state"] is LocalState.QUEUED:
        changes["retry_count"] = job.retry_count + 1
    return changes, reason


def _outcome_unknown(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    return ({"state": LocalState.SUBMITTING, "retry_count": job.retry_count + 1,
             "attempt_ended_at": now, "absent_checks": 0},
            _with_note("create outcome unknown, will reconcile", event))


def _deferred(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    changes, reason = _no_remote_job(job, event, now, _with_note("create not made", event))
    if changes["state"] is LocalState.QUEUED:
        changes["retry_count"] = job.retry_count + 1
    return changes, reason


def _reconcile_empty(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    checks = job.absent_checks if event.checks is None else event.checks
    counted = "not counted yet: too soon after the attempt" if checks == job.absent_checks \
        else f"empty list {checks}"
    return ({"state": LocalState.SUBMITTING, "absent_checks": checks},
            f"reconcile found no remote job ({counted}); looking again later")


def _reconciled_absent(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    changes, reason = _no_remote_job(job, event, now, "reconciled, no remote job exists")
    changes["absent_checks"] = 0
    return changes, reason


def _cancel_queued(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    return ({"state": LocalState.CANCELLED, "cancel_requested": True, "ended_at": now,
             "outcome": Outcome.CANCELLED_LOCALLY}, "cancelled before submission")


def _cancel_submitting(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    return ({"state": LocalState.SUBMITTING, "cancel_requested": True},
            "cancel requested; will be sent once the create resolves")


def _cancel_remote(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    return ({"state": LocalState.CANCELLING, "cancel_requested": True, "cancel_sent_at": None,
             "next_action_at": now}, "cancel requested")


def _cancel_again(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    if job.cancel_requested:
        return {"state": LocalState.CANCELLING}, "cancel requested again (already cancelling)"
    # Cancelling by someone else's hand: record our intent too, and send our own :cancel.
    return ({"state": LocalState.CANCELLING, "cancel_requested": True, "next_action_at": now},
            "cancel requested")


def _cancel_sent(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    return ({"state": LocalState.CANCELLING, "cancel_sent_at": now, "retry_count": 0},
            _with_note("cancel sent", event))


def _observed(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    remote = _need_remote(event)
    if job.remote_id is not None and remote.remote_id != job.remote_id:
        raise ValueError(f"observation of {remote.name} applied to job {job.id} "
                         f"({job.remote_name})")
    changes, reason = _adopt(job, remote, now, "observed")
    changes["retry_count"] = 0
    return changes, reason


def _missing(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    return ({"state": job.state, "missing_checks": job.missing_checks + 1},
            _with_note("remote job answered 404; confirming before calling it lost", event))


def _not_found(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    return ({"state": LocalState.FAILED, "ended_at": now, "outcome": Outcome.REMOTE_LOST,
             "error_code": event.error_code, "error_message": event.error_message},
            _with_note("remote job lost (404, and not in the list)", event))


def _transient(job: Job, event: Event, now: float) -> tuple[dict[str, Any], str]:
    return ({"state": job.state, "retry_count": job.retry_count + 1},
            _with_note(f"transient error, retry {job.retry_count + 1}", event))


@dataclass(frozen=True)
class Rule:
    """One legal (state, event) pair: its handler and every state it may lead to."""

    handler: Handler
    targets: frozenset[LocalState]


def _rule(handler: Handler, *targets: LocalState) -> Rule:
    return Rule(handler, frozenset(targets))


S = LocalState
E = EventKind

# THE transition table. A pair that is not here is illegal and raises IllegalTransition.
TABLE: Mapping[tuple[LocalState, EventKind], Rule] = {
    (S.QUEUED, E.SUBMIT_STARTED): _rule(_submit_started, S.SUBMITTING),
    (S.QUEUED, E.CANCEL_REQUESTED): _rule(_cancel_queued, S.CANCELLED),
    # The sweep found the remote job of a create that was presumed absent: adopt, not re-create.
    (S.QUEUED, E.RECONCILED_FOUND): Rule(_reconciled_found, _ALL_REMOTE_TARGETS),

    (S.SUBMITTING, E.CREATE_SUCCEEDED): Rule(_created, _ALL_REMOTE_TARGETS),
    (S.SUBMITTING, E.CREATE_REJECTED): _rule(_rejected, S.FAILED),
    (S.SUBMITTING, E.CREATE_THROTTLED): _rule(_throttled, S.QUEUED, S.CANCELLED),
    (S.SUBMITTING, E.CREATE_OUTCOME_UNKNOWN): _rule(_outcome_unknown, S.SUBMITTING),
    (S.SUBMITTING, E.CREATE_DEFERRED): _rule(_deferred, S.QUEUED, S.CANCELLED),
    (S.SUBMITTING, E.RECONCILE_EMPTY): _rule(_reconcile_empty, S.SUBMITTING),
    (S.SUBMITTING, E.RECONCILED_FOUND): Rule(_reconciled_found, _ALL_REMOTE_TARGETS),
    (S.SUBMITTING, E.RECONCILED_ABSENT): _rule(_reconciled_absent, S.QUEUED, S.CANCELLED),
    (S.SUBMITTING, E.CANCEL_REQUESTED): _rule(_cancel_submitting, S.SUBMITTING),
    (S.SUBMITTING, E.TRANSIENT_ERROR): _rule(_transient, S.SUBMITTING),

    (S.PENDING, E.CANCEL_REQUESTED): _rule(_cancel_remote, S.CANCELLING),
    (S.PENDING, E.REMOTE_OBSERVED): Rule(_observed, _ALL_REMOTE_TARGETS),
    (S.PENDING, E.REMOTE_MISSING): _rule(_missing, S.PENDING),
    (S.PENDING, E.REMOTE_NOT_FOUND): _rule(_not_found, S.FAILED),
    (S.PENDING, E.TRANSIENT_ERROR): _rule(_transient, S.PENDING),

    (S.RUNNING, E.CANCEL_REQUESTED): _rule(_cancel_remote, S.CANCELLING),
    (S.RUNNING, E.REMOTE_OBSERVED): Rule(_observed, _ALL_REMOTE_TARGETS),
    (S.RUNNING, E.REMOTE_MISSING): _rule(_missing, S.RUNNING),
    (S.RUNNING, E.REMOTE_NOT_FOUND): _rule(_not_found, S.FAILED),
    (S.RUNNING, E.TRANSIENT_ERROR): _rule(_transient, S.RUNNING),

    (S.CANCELLING, E.CANCEL_REQUESTED): _rule(_cancel_again, S.CANCELLING),
    (S.CANCELLING, E.CANCEL_SENT): _rule(_cancel_sent, S.CANCELLING),
    (S.CANCELLING, E.REMOTE_OBSERVED): Rule(_observed, _ALL_REMOTE_TARGETS),
    (S.CANCELLING, E.REMOTE_MISSING): _rule(_missing, S.CANCELLING),
    (S.CANCELLING, E.REMOTE_NOT_FOUND): _rule(_not_found, S.FAILED),
    (S.CANCELLING, E.TRANSIENT_ERROR): _rule(_transient, S.CANCELLING),
    # Terminal states accept nothing: a cancel of an ended job is FAILED_PRECONDITION.
}


def is_legal(state: LocalState, kind: EventKind) -> bool:
    return (state, kind) in TABLE


def apply(job: Job, event: Event, now: float) -> Transition:
    """Apply one event to a job at time `now`; raise IllegalTransition for a pair not in TABLE."""
    rule = TABLE.get((job.state, event.kind))
    if rule is None:
        raise IllegalTransition(f"job {job.id}: {event.kind} is not allowed in state {job.state}")
    changes, reason = rule.handler(job, event, now)
    target = changes["state"]
    if target not in rule.targets:  # a bug in a handler, not a caller error
        raise AssertionError(f"{job.state} + {event.kind} produced undeclared {target}")
    if event.next_action_at is not None:
        changes["next_action_at"] = event.next_action_at
    if event.poll_interval_s is not None:
        changes["poll_interval_s"] = event.poll_interval_s
    changes.update(last_error(event, now))
    after = job.evolve(**changes)
    if after != job:
        after = after.evolve(updated_at=now)
    return Transition(before=job, job=after, event=event.kind, reason=reason)
