"""Unit tests for the pure job state machine: every (state, event) pair and the special cases."""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuningd.core.errors import Code, IllegalTransition
from tuningd.core.machine import (
    TABLE,
    Event,
    EventKind,
    RemoteSnapshot,
    Transition,
    apply,
    is_legal,
)
from tuningd.core.model import (
    REMOTE_TO_LOCAL,
    TERMINAL_STATES,
    Job,
    JobState,
    LocalState,
    Outcome,
)

S = LocalState
E = EventKind
NOW = 1000.0
REMOTE_NAME = "projects/my-proj/locations/us-central1/tuningJobs/4982013113894174720"
# Vertex answers with the project number: the same job under another spelling of the name.
REMOTE_NAME_NUMBER = "projects/123456789012/locations/us-central1/tuningJobs/4982013113894174720"


def snap(state: str = "JOB_STATE_RUNNING", *, substate: str | None = None,
         update_time: str | None = "2025-06-02T10:31:12.774120Z", error_code: int | None = None,
         error_message: str | None = None, name: str = REMOTE_NAME_NUMBER) -> RemoteSnapshot:
    body: dict[str, Any] = {"name": name, "state": state}
    if substate:
        body["tuningJobState"] = substate
    if error_code is not None:
        body["error"] = {"code": error_code, "message": error_message}
    return RemoteSnapshot(name=name, state=state, substate=substate, update_time=update_time,
                          error_code=error_code, error_message=error_message,
                          json_text=json.dumps(body))


def make_job(state: LocalState, **changes: Any) -> Job:
    """A realistic job in `state` (remote fields where a remote job exists)."""
    base: dict[str, Any] = {
        "id": "7f3c2a9e-0b1d-4c55-9a53-2f1e0c6d8b11", "project": "my-proj",
        "location": "us-central1", "spec_json": "{}", "base_model": "gemini-2.5-flash",
        "state": state, "created_at": 100.0, "updated_at": 200.0, "next_action_at": 500.0,
    }
    if state is not S.QUEUED:
        base.update(attempts=1, submit_started_at=300.0)
    if state in (S.PENDING, S.RUNNING, S.CANCELLING, S.SUCCEEDED, S.FAILED, S.CANCELLED):
        base.update(remote_name=REMOTE_NAME, remote_state="JOB_STATE_PENDING",
                    submitted_at=301.0, poll_interval_s=60.0)
    if state is S.CANCELLING:
        base.update(cancel_requested=True, remote_state="JOB_STATE_RUNNING")
    if state in TERMINAL_STATES:
        base.update(ended_at=400.0, outcome=Outcome.NORMAL)
    base.update(changes)
    return Job(**base)


def default_event(kind: EventKind) -> Event:
    """A representative event of each kind for the full product test."""
    return {
        E.SUBMIT_STARTED: Event.submit_started(),
        E.CREATE_SUCCEEDED: Event.create_succeeded(snap("JOB_STATE_PENDING")),
        E.CREATE_REJECTED: Event.create_rejected(
            int(Code.INVALID_ARGUMENT), "The adapter size is not supported for this base model."),
        E.CREATE_THROTTLED: Event.create_throttled(retry_at=NOW + 10, error_message="quota"),
        E.CREATE_OUTCOME_UNKNOWN: Event.create_outcome_unknown(reconcile_at=NOW + 60,
                                                               error_message="timeout"),
        E.CREATE_DEFERRED: Event.create_deferred(retry_at=NOW + 30,
                                                 error_message="PERMISSION_DENIED"),
        E.RECONCILE_EMPTY: Event.reconcile_empty(checks=1, next_check_at=NOW + 60),
        E.RECONCILED_FOUND: Event.reconciled_found(snap("JOB_STATE_RUNNING")),
        E.RECONCILED_ABSENT: Event.reconciled_absent(),
        E.CANCEL_REQUESTED: Event.cancel_requested(),
        E.CANCEL_SENT: Event.cancel_sent(),
        E.REMOTE_OBSERVED: Event.remote_observed(
            snap("JOB_STATE_RUNNING", substate="TUNING_JOB_STATE_TUNING")),
        E.REMOTE_MISSING: Event.remote_missing(recheck_at=NOW + 60, error_message="404"),
        E.REMOTE_NOT_FOUND: Event.remote_not_found(),
        E.TRANSIENT_ERROR: Event.transient_error(retry_at=NOW + 5, error_message="503"),
    }[kind]


# The expected result of every legal pair under default_event: target state and fields.
EXPECTED: dict[tuple[LocalState, EventKind], tuple[LocalState, dict[str, Any]]] = {
    (S.QUEUED, E.SUBMIT_STARTED): (S.SUBMITTING, {"attempts": 1, "submit_started_at": NOW}),
    (S.QUEUED, E.CANCEL_REQUESTED): (S.CANCELLED, {
        "outcome": Outcome.CANCELLED_LOCALLY, "ended_at": NOW, "cancel_requested": True}),
    (S.SUBMITTING, E.CREATE_SUCCEEDED): (S.PENDING, {
        "remote_name": REMOTE_NAME_NUMBER, "remote_state": "JOB_STATE_PENDING",
        "submitted_at": NOW, "retry_count": 0, "ended_at": None, "outcome": None}),
    (S.SUBMITTING, E.CREATE_REJECTED): (S.FAILED, {
        "outcome": Outcome.REJECTED, "ended_at": NOW, "error_code": 3,
        "error_message": "The adapter size is not supported for this base model."}),
    (S.SUBMITTING, E.CREATE_THROTTLED): (S.QUEUED, {
        "next_action_at": NOW + 10, "retry_count": 1, "attempts": 1}),
    (S.QUEUED, E.RECONCILED_FOUND): (S.RUNNING, {
        "remote_name": REMOTE_NAME_NUMBER, "submitted_at": NOW, "attempts": 0}),
    (S.SUBMITTING, E.CREATE_OUTCOME_UNKNOWN): (S.SUBMITTING, {
        "next_action_at": NOW + 60, "retry_count": 1, "remote_name": None,
        "attempt_ended_at": NOW, "absent_checks": 0}),
    (S.SUBMITTING, E.CREATE_DEFERRED): (S.QUEUED, {
        "next_action_at": NOW + 30, "retry_count": 1, "attempts": 1, "remote_name": None}),
    (S.SUBMITTING, E.RECONCILE_EMPTY): (S.SUBMITTING, {
        "absent_checks": 1, "next_action_at": NOW + 60}),
    (S.SUBMITTING, E.RECONCILED_FOUND): (S.RUNNING, {
        "remote_name": REMOTE_NAME_NUMBER, "remote_state": "JOB_STATE_RUNNING",
        "submitted_at": NOW}),
    (S.SUBMITTING, E.RECONCILED_ABSENT): (S.QUEUED, {"remote_name": None, "ended_at": None}),
    (S.SUBMITTING, E.CANCEL_REQUESTED): (S.SUBMITTING, {"cancel_requested": True}),
    (S.SUBMITTING, E.TRANSIENT_ERROR): (S.SUBMITTING, {"retry_count": 1,
                                                       "next_action_at": NOW + 5}),
    (S.PENDING, E.CANCEL_REQUESTED): (S.CANCELLING, {
        "cancel_requested": True, "cancel_sent_at": None, "next_action_at": NOW}),
    (S.PENDING, E.REMOTE_OBSERVED): (S.RUNNING, {
        "remote_state": "JOB_STATE_RUNNING", "remote_substate": "TUNING_JOB_STATE_TUNING",
        "remote_update_time": "2025-06-02T10:31:12.774120Z"}),
    (S.PENDING, E.REMOTE_MISSING): (S.PENDING, {
        "missing_checks": 1, "next_action_at": NOW + 60, "ended_at": None}),
    (S.PENDING, E.REMOTE_NOT_FOUND): (S.FAILED, {
        "outcome": Outcome.REMOTE_LOST, "ended_at": NOW, "error_code": 5}),
    (S.PENDING, E.TRANSIENT_ERROR): (S.PENDING, {"retry_count": 1, "next_action_at": NOW + 5}),
    (S.RUNNING, E.CANCEL_REQUESTED): (S.CANCELLING, {
        "cancel_requested": True, "next_action_at": NOW}),
    (S.RUNNING, E.REMOTE_OBSERVED): (S.RUNNING, {"remote_substate": "TUNING_JOB_STATE_TUNING"}),
    (S.RUNNING, E.REMOTE_MISSING): (S.RUNNING, {"missing_checks": 1}),
    (S.RUNNING, E.REMOTE_NOT_FOUND): (S.FAILED, {"outcome": Outcome.REMOTE_LOST}),
    (S.RUNNING, E.TRANSIENT_ERROR): (S.RUNNING, {"retry_count": 1}),
    (S.CANCELLING, E.CANCEL_REQUESTED): (S.CANCELLING, {"cancel_requested": True,
                                                        "next_action_at": 500.0}),
    (S.CANCELLING, E.CANCEL_SENT): (S.CANCELLING, {"cancel_sent_at": NOW}),
    (S.CANCELLING, E.REMOTE_OBSERVED): (S.CANCELLING, {
        "remote_state": "JOB_STATE_RUNNING", "outcome": None}),
    (S.CANCELLING, E.REMOTE_MISSING): (S.CANCELLING, {"missing_checks": 1}),
    (S.CANCELLING, E.REMOTE_NOT_FOUND): (S.FAILED, {"outcome": Outcome.REMOTE_LOST}),
    (S.CANCELLING, E.TRANSIENT_ERROR): (S.CANCELLING, {"retry_count": 1}),
}

ALL_PAIRS = list(itertools.product(list(LocalState), list(EventKind)))


def test_table_is_exactly_the_expected_legal_pairs() -> None:
    """The transition table allows exactly the pairs this test file expects, no more."""
    assert set(TABLE) == set(EXPECTED)


@pytest.mark.parametrize(("state", "kind"), ALL_PAIRS, ids=[f"{s}-{k}" for s, k in ALL_PAIRS])
def test_every_state_event_pair(state: LocalState, kind: EventKind) -> None:
    """Each pair either yields the expected state and fields or raises and changes nothing."""
    job = make_job(state)
    snapshot = make_job(state)
    event = default_event(kind)
    if (state, kind) not in EXPECTED:
        assert not is_legal(state, kind)
        with pytest.raises(IllegalTransition):
            apply(job, event, NOW)
        assert job == snapshot
        return
    assert is_legal(state, kind)
    target, fields = EXPECTED[(state, kind)]
    tr = apply(job, event, NOW)
    assert job == snapshot, "apply must not mutate its input"
    assert tr.from_state is state
    assert tr.to_state is target
    assert tr.job.state is target
    assert tr.before is job
    assert tr.event is kind
    assert tr.reason
    assert target in TABLE[(state, kind)].targets
    for name, value in fields.items():
        assert getattr(tr.job, name) == value, name
    if tr.job != job:
        assert tr.job.updated_at == NOW
    assert (tr.job.ended_at is not None) == target.is_terminal
    assert tr.job.id == job.id


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_terminal_states_accept_nothing(state: LocalState) -> None:
    """A terminal job rejects every event, so a late cancel maps to FAILED_PRECONDITION."""
    for kind in EventKind:
        assert not is_legal(state, kind)
    with pytest.raises(IllegalTransition) as info:
        apply(make_job(state), Event.cancel_requested(), NOW)
    assert info.value.status == "FAILED_PRECONDITION"


def test_submit_started_counts_attempts_across_retries() -> None:
    """Every create attempt increments the attempt counter, also after a requeue."""
    job = make_job(S.QUEUED, attempts=2)
    tr = apply(job, Event.submit_started(next_action_at=NOW + 60), NOW)
    assert tr.job.attempts == 3
    assert tr.job.next_action_at == NOW + 60
    assert tr.reason == "create attempt 3 started"


@pytest.mark.parametrize(("remote_state", "local"), [
    ("JOB_STATE_PENDING", S.PENDING), ("JOB_STATE_QUEUED", S.PENDING),
    ("JOB_STATE_RUNNING", S.RUNNING), ("JOB_STATE_CANCELLING", S.CANCELLING),
    ("JOB_STATE_SUCCEEDED", S.SUCCEEDED), ("JOB_STATE_FAILED", S.FAILED),
    ("JOB_STATE_CANCELLED", S.CANCELLED), ("JOB_STATE_UNSPECIFIED", S.PENDING),
    ("JOB_STATE_FROM_THE_FUTURE", S.PENDING),
])
@pytest.mark.parametrize("kind", [E.CREATE_SUCCEEDED, E.RECONCILED_FOUND])
def test_adoption_maps_remote_state(remote_state: str, local: LocalState,
                                    kind: EventKind) -> None:
    """A created or reconciled job takes the mapped state; an unknown state counts as pending."""
    event = Event(kind, remote=snap(remote_state))
    tr = apply(make_job(S.SUBMITTING), event, NOW)
    assert tr.to_state is local
    assert tr.job.remote_state == remote_state
    assert tr.job.submitted_at == NOW
    assert tr.job.remote_json is not None
    if local.is_terminal:
        assert tr.job.ended_at == NOW
        assert tr.job.outcome is Outcome.NORMAL


@pytest.mark.parametrize("kind", [E.CREATE_SUCCEEDED, E.RECONCILED_FOUND])
@pytest.mark.parametrize("remote_state", ["JOB_STATE_PENDING", "JOB_STATE_RUNNING",
                                          "JOB_STATE_UNSPECIFIED", "JOB_STATE_FROM_THE_FUTURE"])
def test_adoption_with_cancel_intent_goes_cancelling(kind: EventKind, remote_state: str) -> None:
    """A cancel asked for while submitting turns the adopted job into cancelling, due now."""
    job = make_job(S.SUBMITTING, cancel_requested=True)
    tr = apply(job, Event(kind, remote=snap(remote_state)), NOW)
    assert tr.to_state is S.CANCELLING
    assert tr.job.cancel_requested
    assert tr.job.cancel_sent_at is None
    assert tr.job.next_action_at == NOW
    assert tr.job.remote_name == REMOTE_NAME_NUMBER


@pytest.mark.parametrize(("remote_state", "local", "outcome"), [
    ("JOB_STATE_SUCCEEDED", S.SUCCEEDED, Outcome.COMPLETED_DESPITE_CANCEL),
    ("JOB_STATE_PARTIALLY_SUCCEEDED", S.SUCCEEDED, Outcome.COMPLETED_DESPITE_CANCEL),
    ("JOB_STATE_FAILED", S.FAILED, Outcome.FAILED_DESPITE_CANCEL),
    ("JOB_STATE_EXPIRED", S.FAILED, Outcome.FAILED_DESPITE_CANCEL),
    ("JOB_STATE_CANCELLED", S.CANCELLED, Outcome.NORMAL),
])
def test_reconciled_terminal_with_cancel_intent_records_outcome(
        remote_state: str, local: LocalState, outcome: Outcome) -> None:
    """A reconciled job that already ended records whether it ended despite the cancel."""
    job = make_job(S.SUBMITTING, cancel_requested=True)
    tr = apply(job, Event.reconciled_found(snap(remote_state)), NOW)
    assert tr.to_state is local
    assert tr.job.outcome is outcome


def test_reconciled_found_keeps_an_earlier_submitted_at() -> None:
    """Reconciliation does not overwrite a known submission time."""
    job = make_job(S.SUBMITTING, submitted_at=350.0)
    tr = apply(job, Event.reconciled_found(snap("JOB_STATE_RUNNING")), NOW)
    assert tr.job.submitted_at == 350.0


@pytest.mark.parametrize("kind", [E.CREATE_THROTTLED, E.RECONCILED_ABSENT])
def test_no_remote_job_with_cancel_intent_cancels_locally(kind: EventKind) -> None:
    """When Vertex definitely has no job, a pending cancel finishes locally without a call."""
    job = make_job(S.SUBMITTING, cancel_requested=True)
    tr = apply(job, default_event(kind), NOW)
    assert tr.to_state is S.CANCELLED
    assert tr.job.outcome is Outcome.CANCELLED_LOCALLY
    assert tr.job.ended_at == NOW


def test_reconciled_absent_sets_retry_time_when_given() -> None:
    """A requeue after a definite absence carries the policy's retry time."""
    tr = apply(make_job(S.SUBMITTING), Event.reconciled_absent(retry_at=NOW + 7), NOW)
    assert tr.to_state is S.QUEUED
    assert tr.job.next_action_at == NOW + 7


def test_create_rejected_keeps_failure_even_with_cancel_intent() -> None:
    """A rejected create is a failure with Google's message, cancel or not."""
    job = make_job(S.SUBMITTING, cancel_requested=True)
    tr = apply(job, Event.create_rejected(7, "Permission denied"), NOW)
    assert tr.to_state is S.FAILED
    assert tr.job.outcome is Outcome.REJECTED
    assert tr.job.error_message == "Permission denied"
    assert "Permission denied" in tr.reason


@pytest.mark.parametrize("remote_state", list(JobState))
def test_observed_maps_every_remote_state_without_cancel(remote_state: JobState) -> None:
    """A running job follows REMOTE_TO_LOCAL; an unmapped state keeps the local state."""
    job = make_job(S.RUNNING)
    tr = apply(job, Event.remote_observed(snap(remote_state.value)), NOW)
    assert tr.to_state is REMOTE_TO_LOCAL.get(remote_state, S.RUNNING)
    assert tr.job.remote_state == remote_state.value
    if tr.to_state.is_terminal:
        assert tr.job.outcome is Outcome.NORMAL
        assert tr.job.ended_at == NOW
    else:
        assert tr.job.outcome is None
        assert tr.job.ended_at is None


@pytest.mark.parametrize(("remote_state", "local", "outcome"), [
    ("JOB_STATE_PENDING", S.CANCELLING, None),
    ("JOB_STATE_QUEUED", S.CANCELLING, None),
    ("JOB_STATE_RUNNING", S.CANCELLING, None),
    ("JOB_STATE_PAUSED", S.CANCELLING, None),
    ("JOB_STATE_CANCELLING", S.CANCELLING, None),
    ("JOB_STATE_SUCCEEDED", S.SUCCEEDED, Outcome.COMPLETED_DESPITE_CANCEL),
    ("JOB_STATE_FAILED", S.FAILED, Outcome.FAILED_DESPITE_CANCEL),
    ("JOB_STATE_EXPIRED", S.FAILED, Outcome.FAILED_DESPITE_CANCEL),
    ("JOB_STATE_CANCELLED", S.CANCELLED, Outcome.NORMAL),
    ("JOB_STATE_UNSPECIFIED", S.CANCELLING, None),
])
def test_cancelling_job_observed(remote_state: str, local: LocalState,
                                 outcome: Outcome | None) -> None:
    """A cancelling job stays cancelling until Vertex ends it, and records how it ended."""
    job = make_job(S.CANCELLING, cancel_sent_at=900.0)
    tr = apply(job, Event.remote_observed(snap(remote_state)), NOW)
    assert tr.to_state is local
    assert tr.job.outcome is outcome
    assert tr.job.cancel_sent_at == 900.0


@pytest.mark.parametrize(("remote_state", "local"), [
    ("JOB_STATE_FAILED", S.FAILED), ("JOB_STATE_CANCELLED", S.CANCELLED),
    ("JOB_STATE_EXPIRED", S.FAILED),
])
def test_remote_error_is_copied_on_failed_and_cancelled(remote_state: str,
                                                        local: LocalState) -> None:
    """The remote google.rpc error (gRPC code and message) is stored on failure or cancel."""
    event = Event.remote_observed(snap(remote_state, error_code=13, error_message="boom"))
    tr = apply(make_job(S.RUNNING), event, NOW)
    assert tr.to_state is local
    assert (tr.job.error_code, tr.job.error_message) == (13, "boom")
    assert "boom" in tr.reason


def test_succeeded_does_not_copy_an_error() -> None:
    """A success leaves the error fields alone."""
    tr = apply(make_job(S.RUNNING), Event.remote_observed(snap("JOB_STATE_SUCCEEDED")), NOW)
    assert tr.job.error_code is None
    assert tr.job.error_message is None


def test_external_cancel_is_followed_without_our_intent() -> None:
    """A job cancelled by someone else goes cancelling, and may return to running."""
    job = make_job(S.RUNNING)
    tr = apply(job, Event.remote_observed(snap("JOB_STATE_CANCELLING")), NOW)
    assert tr.to_state is S.CANCELLING
    assert not tr.job.cancel_requested
    back = apply(tr.job, Event.remote_observed(snap("JOB_STATE_RUNNING")), NOW + 1)
    assert back.to_state is S.RUNNING


def test_cancel_request_on_external_cancelling_records_intent() -> None:
    """Asking to cancel a job that someone else is cancelling stores our intent, due now."""
    job = make_job(S.CANCELLING, cancel_requested=False)
    tr = apply(job, Event.cancel_requested(), NOW)
    assert tr.job.cancel_requested
    assert tr.job.next_action_at == NOW
    assert tr.changed


def test_repeated_cancel_is_a_no_op() -> None:
    """A second cancel of a cancelling job changes nothing, not even updated_at."""
    job = make_job(S.CANCELLING)
    tr = apply(job, Event.cancel_requested(), NOW)
    assert tr.job == job
    assert not tr.changed
    assert not tr.state_changed


def test_cancel_sent_resets_retries_and_keeps_note() -> None:
    """A sent cancel records its time and clears the retry count; a note lands in the reason."""
    job = make_job(S.CANCELLING, retry_count=3)
    tr = apply(job, Event.cancel_sent(next_action_at=NOW, note="FAILED_PRECONDITION"), NOW)
    assert tr.job.cancel_sent_at == NOW
    assert tr.job.retry_count == 0
    assert tr.job.next_action_at == NOW
    assert "FAILED_PRECONDITION" in tr.reason


def test_observed_resets_retry_count() -> None:
    """A successful poll ends a run of transient errors."""
    job = make_job(S.RUNNING, retry_count=4)
    tr = apply(job, Event.remote_observed(snap("JOB_STATE_RUNNING")), NOW)
    assert tr.job.retry_count == 0


def test_transient_errors_accumulate_without_state_change() -> None:
    """Transient errors only count up and reschedule."""
    job = make_job(S.PENDING)
    for i in range(1, 4):
        tr = apply(job, Event.transient_error(retry_at=NOW + i), NOW)
        assert tr.to_state is S.PENDING
        assert not tr.state_changed
        assert not tr.changed
        job = tr.job
        assert job.retry_count == i


def test_identical_observation_is_not_a_change() -> None:
    """Observing exactly what is stored is not a change (the poll interval may grow)."""
    first = apply(make_job(S.RUNNING), Event.remote_observed(snap("JOB_STATE_RUNNING")), NOW)
    assert first.changed
    again = apply(first.job, Event.remote_observed(snap("JOB_STATE_RUNNING")), NOW + 30)
    assert not again.changed
    assert again.job == first.job


@pytest.mark.parametrize("field_change", [
    {"substate": "TUNING_JOB_STATE_POST_PROCESSING"},
    {"update_time": "2025-06-02T10:40:00Z"},
])
def test_substate_or_update_time_change_is_a_change(field_change: dict[str, str]) -> None:
    """A new sub-state or updateTime counts as a change even in the same state."""
    first = apply(make_job(S.RUNNING), Event.remote_observed(snap("JOB_STATE_RUNNING")), NOW)
    kwargs: dict[str, Any] = {"substate": None, "update_time": "2025-06-02T10:31:12.774120Z"}
    kwargs.update(field_change)
    again = apply(first.job, Event.remote_observed(snap("JOB_STATE_RUNNING", **kwargs)), NOW + 1)
    assert again.changed
    assert not again.state_changed


def test_progress_only_observation_is_stored_but_not_a_change() -> None:
    """New progress counters with the same state, sub-state and updateTime are kept, not news."""
    tuning = "TUNING_JOB_STATE_TUNING"
    first = apply(make_job(S.RUNNING), Event.remote_observed(snap(substate=tuning)), NOW)
    progressed = snap(substate=tuning)
    body = {**json.loads(progressed.json_text or "{}"),
            "tuningJobMetadata": {"completedStepCount": 40}}
    progressed = dataclasses.replace(progressed, json_text=json.dumps(body))
    again = apply(first.job, Event.remote_observed(progressed), NOW + 30)
    assert not again.changed
    assert again.job.remote == body


def test_observation_of_another_job_is_refused() -> None:
    """Applying one remote job's state to another local job is a programming error."""
    other = "projects/123/locations/us-central1/tuningJobs/999"
    with pytest.raises(ValueError, match="999"):
        apply(make_job(S.RUNNING), Event.remote_observed(snap(name=other)), NOW)


def test_observation_matches_by_id_not_project_spelling() -> None:
    """A name with the project number matches a job stored under the project id."""
    tr = apply(make_job(S.RUNNING), Event.remote_observed(snap(name=REMOTE_NAME_NUMBER)), NOW)
    assert tr.job.remote_name == REMOTE_NAME_NUMBER


@pytest.mark.parametrize("kind", [E.CREATE_SUCCEEDED, E.RECONCILED_FOUND, E.REMOTE_OBSERVED])
def test_remote_events_need_a_snapshot(kind: EventKind) -> None:
    """An event that carries remote state but has none is refused loudly."""
    state = S.RUNNING if kind is E.REMOTE_OBSERVED else S.SUBMITTING
    with pytest.raises(ValueError, match="RemoteSnapshot"):
        apply(make_job(state), Event(kind), NOW)


def test_event_schedule_fields_are_stored() -> None:
    """next_action_at and poll_interval_s given with the event land on the job."""
    event = Event.remote_observed(snap("JOB_STATE_RUNNING"), next_action_at=NOW + 33,
                                  poll_interval_s=30.0)
    tr = apply(make_job(S.RUNNING), event, NOW)
    assert (tr.job.next_action_at, tr.job.poll_interval_s) == (NOW + 33, 30.0)


def test_with_schedule_keeps_the_transition_and_changes_only_schedule() -> None:
    """with_schedule returns the same transition with the schedule stored."""
    tr = apply(make_job(S.RUNNING), Event.remote_observed(snap("JOB_STATE_RUNNING")), NOW)
    sched = tr.with_schedule(NOW + 40, 60.0)
    assert isinstance(sched, Transition)
    assert sched.job.next_action_at == NOW + 40
    assert sched.job.poll_interval_s == 60.0
    assert (sched.reason, sched.before, sched.event) == (tr.reason, tr.before, tr.event)
    assert tr.with_schedule(NOW + 1).job.poll_interval_s == tr.job.poll_interval_s


def test_snapshot_from_json_reads_state_substate_and_error() -> None:
    """RemoteSnapshot.from_json extracts the fields the machine uses from TuningJob JSON."""
    body = {"name": REMOTE_NAME_NUMBER, "state": "JOB_STATE_FAILED",
            "tuningJobState": "TUNING_JOB_STATE_TUNING", "updateTime": "2025-06-02T11:00:00Z",
            "error": {"code": 3, "message": "invalid dataset"}}
    s = RemoteSnapshot.from_json(body)
    assert s.state == "JOB_STATE_FAILED"
    assert s.job_state is JobState.JOB_STATE_FAILED
    assert s.substate == "TUNING_JOB_STATE_TUNING"
    assert s.update_time == "2025-06-02T11:00:00Z"
    assert (s.error_code, s.error_message) == (3, "invalid dataset")
    assert s.remote_id == "4982013113894174720"
    assert s.json_text is not None
    assert json.loads(s.json_text) == body


def test_snapshot_from_minimal_json() -> None:
    """A TuningJob without state, sub-state or error gives UNSPECIFIED and Nones."""
    s = RemoteSnapshot.from_json({"name": REMOTE_NAME})
    assert s.state == "JOB_STATE_UNSPECIFIED"
    assert s.substate is None and s.error_code is None and s.update_time is None
    assert RemoteSnapshot(name=REMOTE_NAME, state="NOPE").job_state is None


def test_illegal_transition_message_names_job_and_pair() -> None:
    """The error says which job, event and state were involved."""
    with pytest.raises(IllegalTransition, match=r"cancel_sent.*running"):
        apply(make_job(S.RUNNING), Event.cancel_sent(), NOW)


# A property: any sequence of events keeps the job's invariants.
_REMOTE_STATES = [s.value for s in JobState] + ["JOB_STATE_NEW"]
_events = st.one_of(
    st.just(Event.submit_started()),
    st.sampled_from(_REMOTE_STATES).map(lambda s: Event.create_succeeded(snap(s))),
    st.just(Event.create_rejected(3, "bad")),
    st.just(Event.create_throttled(retry_at=NOW)),
    st.just(Event.create_outcome_unknown(reconcile_at=NOW)),
    st.just(Event.create_deferred(retry_at=NOW, error_message="403")),
    st.just(Event.reconcile_empty(checks=1, next_check_at=NOW)),
    st.just(Event.remote_missing(recheck_at=NOW, error_message="404")),
    st.sampled_from(_REMOTE_STATES).map(lambda s: Event.reconciled_found(snap(s))),
    st.just(Event.reconciled_absent()),
    st.just(Event.cancel_requested()),
    st.just(Event.cancel_sent()),
    st.sampled_from(_REMOTE_STATES).map(lambda s: Event.remote_observed(snap(s))),
    st.just(Event.remote_not_found()),
    st.just(Event.transient_error(retry_at=NOW)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_events, max_size=25))
def test_random_event_sequences_keep_invariants(events: list[Event]) -> None:
    """Any event sequence yields only declared states, and terminal states are absorbing."""
    job = make_job(S.QUEUED)
    t = NOW
    for event in events:
        t += 1.0
        if not is_legal(job.state, event.kind):
            with pytest.raises(IllegalTransition):
                apply(job, event, t)
            continue
        tr = apply(job, event, t)
        assert tr.to_state in TABLE[(job.state, event.kind)].targets
        job = tr.job
        assert (job.ended_at is not None) == job.state.is_terminal
        assert (job.outcome is not None) == job.state.is_terminal
        if job.state in (S.PENDING, S.RUNNING, S.CANCELLING):
            assert job.remote_name is not None
        if job.state in (S.PENDING, S.RUNNING):
            assert not job.cancel_requested
        assert (job.attempts >= 1) == (job.submit_started_at is not None)


# ----- the last error -----

ERROR_EVENTS: list[tuple[LocalState, Event, int]] = [
    (S.SUBMITTING, Event.create_deferred(
        retry_at=NOW, error_code=int(Code.UNAUTHENTICATED),
        error_message="UNAUTHENTICATED: no usable Google credentials"),
     int(Code.UNAUTHENTICATED)),
    (S.SUBMITTING, Event.create_throttled(retry_at=NOW + 10, error_message="quota"),
     int(Code.RESOURCE_EXHAUSTED)),
    (S.SUBMITTING, Event.create_outcome_unknown(reconcile_at=NOW, error_message="timeout"),
     int(Code.UNKNOWN)),
    (S.SUBMITTING, Event.create_rejected(int(Code.INVALID_ARGUMENT), "bad dataset"),
     int(Code.INVALID_ARGUMENT)),
    (S.RUNNING, Event.transient_error(retry_at=NOW + 5, error_code=int(Code.DEADLINE_EXCEEDED),
                                      error_message="DEADLINE_EXCEEDED: read timed out"),
     int(Code.DEADLINE_EXCEEDED)),
    (S.RUNNING, Event.remote_missing(recheck_at=NOW + 30, error_message="gone?"),
     int(Code.NOT_FOUND)),
    (S.RUNNING, Event.remote_not_found("gone"), int(Code.NOT_FOUND)),
]


@pytest.mark.parametrize(("state", "event", "code"), ERROR_EVENTS,
                         ids=[e.kind.value for _, e, _ in ERROR_EVENTS])
def test_error_events_record_the_last_error(state: LocalState, event: Event, code: int) -> None:
    """Every event that carries an error stores its code, message (without a repeated status
    name in front) and the event's time as the job's last error."""
    job = apply(make_job(state), event, NOW).job
    assert job.last_error_code == code
    assert job.last_error_at == NOW
    assert job.last_error_message
    assert not job.last_error_message.startswith(f"{Code(code).name}: ")


def test_last_error_is_kept_after_success_and_is_not_news() -> None:
    """A later success keeps the last error (its time says how old it is), and an error alone
    is bookkeeping: no history-worthy change."""
    running = make_job(S.RUNNING)
    tr = apply(running, Event.transient_error(retry_at=NOW + 5, error_message="flaky"), NOW)
    assert not tr.changed and tr.job.last_error_message == "flaky"
    later = apply(tr.job, Event.remote_observed(snap("JOB_STATE_SUCCEEDED")), NOW + 10).job
    assert later.state is S.SUCCEEDED
    assert (later.last_error_code, later.last_error_at) == (int(Code.UNAVAILABLE), NOW)


def test_a_cancel_note_is_not_an_error() -> None:
    """A cancel answered "already ended" (FAILED_PRECONDITION) is a note, not a last error."""
    job = apply(make_job(S.CANCELLING), Event.cancel_sent(note="FAILED_PRECONDITION: ended"),
                NOW).job
    assert job.last_error_code is None and job.last_error_at is None
