"""The pure verdicts on uncertain remote facts: absence, 404s, create errors, pauses, findings."""

from __future__ import annotations

import random

import pytest

from tuningd.config import BreakerSettings, ReconcileSettings
from tuningd.core.model import Job, LocalState
from tuningd.core.recovery import (
    AbsenceRule,
    CreateVerdict,
    Finding,
    NotFoundStep,
    absence_verdict,
    after_not_found,
    classify,
    create_verdict,
    paused_after,
    probe_deferred,
)

NOW = 1_000_000.0
SHIPPED = AbsenceRule()


def job(state: LocalState = LocalState.SUBMITTING, **changes: object) -> Job:
    base = Job(id="j", project="p", location="us-central1", spec_json="{}",
               base_model="gemini-2.5-flash", state=state, created_at=NOW - 100,
               updated_at=NOW - 100, attempts=1, submit_started_at=NOW - 70,
               attempt_ended_at=NOW - 10)
    return base.evolve(**changes)


def test_shipped_settings_presume_absence_five_minutes_after_the_failed_attempt() -> None:
    """60 s timeout + 60 s list lag, then three empty lists 0, 60 and 120 s apart: 300 s."""
    assert SHIPPED.landing_window_s == 120
    assert SHIPPED.absent_after_s == 300


def test_an_empty_list_inside_the_landing_window_does_not_count() -> None:
    """A list before attempt end + timeout + lag proves nothing: not counted, look at the
    window's start (measured from the attempt's end, not its start: breakage 1)."""
    v = absence_verdict(job(), NOW, SHIPPED)
    assert (v.absent, v.checks, v.next_check_at) == (False, 0, NOW - 10 + 120)


def test_absence_needs_spaced_confirmations() -> None:
    """Past the window, empty lists count; the spacing doubles; the third one decides."""
    start = NOW - 10 + 120
    v1 = absence_verdict(job(), start, SHIPPED)
    assert (v1.absent, v1.checks, v1.next_check_at) == (False, 1, start + 60)
    v2 = absence_verdict(job(absent_checks=1), start + 60, SHIPPED)
    assert (v2.absent, v2.checks, v2.next_check_at) == (False, 2, start + 60 + 120)
    v3 = absence_verdict(job(absent_checks=2), start + 180, SHIPPED)
    assert (v3.absent, v3.checks) == (True, 3)


def test_without_a_recorded_end_the_attempt_start_is_used() -> None:
    """A job stored by an older tuningd (no attempt end) waits from its attempt's start."""
    v = absence_verdict(job(attempt_ended_at=None), NOW, SHIPPED)
    assert v.next_check_at == NOW - 70 + 120 and not v.absent


def test_a_404_is_rechecked_then_settled_by_a_list() -> None:
    """The first 404 means "look again later"; the second, "ask the list"."""
    assert after_not_found(job(LocalState.RUNNING)) is NotFoundStep.RECHECK_LATER
    assert after_not_found(job(LocalState.RUNNING, missing_checks=1)) \
        is NotFoundStep.CONFIRM_BY_LIST


@pytest.mark.parametrize(("http", "status", "kind", "verdict"), [
    (400, "INVALID_ARGUMENT", "invalid_request", CreateVerdict.INVALID),
    (401, "UNAUTHENTICATED", "auth", CreateVerdict.PLACE_REFUSED),
    (503, "UNAVAILABLE", "auth", CreateVerdict.PLACE_REFUSED),  # credentials unusable
    (403, "PERMISSION_DENIED", "permanent", CreateVerdict.PLACE_REFUSED),
    (404, "NOT_FOUND", "permanent", CreateVerdict.PLACE_REFUSED),
    (400, "FAILED_PRECONDITION", "permanent", CreateVerdict.PLACE_REFUSED),
    (400, "INVALID_ARGUMENT", "permanent", CreateVerdict.REJECTED),
    (429, "RESOURCE_EXHAUSTED", "quota", CreateVerdict.THROTTLED),
    (409, "ABORTED", "permanent", CreateVerdict.NOT_MADE),
    (503, "UNAVAILABLE", "transient", CreateVerdict.NOT_MADE),  # connect refused: not sent
    (504, "DEADLINE_EXCEEDED", "unknown_outcome", CreateVerdict.UNKNOWN),
    (500, "INTERNAL", "unknown_outcome", CreateVerdict.UNKNOWN),
])
def test_create_errors_are_routed_in_one_place(http: int, status: str, kind: str,
                                               verdict: CreateVerdict) -> None:
    """Each create failure has one verdict: project-wide errors pause instead of failing jobs
    (breakage 4), a refused-before-sending parent fails the job (breakage 5)."""
    assert create_verdict(http, status, kind) is verdict


def test_probe_backoff_doubles_up_to_the_cap_and_keeps_its_start() -> None:
    """Each failed probe doubles the wait (with jitter) up to probe_max_s; `since` is kept."""
    s = BreakerSettings(probe_initial_s=30, probe_max_s=240, jitter=0.0)
    rng = random.Random(1)
    p = paused_after(None, "PERMISSION_DENIED", "no", NOW, s, rng)
    waits = [p.probe_at - NOW]
    for i in range(1, 6):
        p = paused_after(p, "PERMISSION_DENIED", "no", NOW + i, s, rng)
        waits.append(p.probe_at - (NOW + i))
    assert waits == [30, 60, 120, 240, 240, 240]
    assert p.since == NOW and p.failures == 6
    again = probe_deferred(p, NOW + 10, s, rng)
    assert (again.failures, again.probe_at, again.probing) == (6, NOW + 250, False)


@pytest.mark.parametrize(("local", "in_flight", "finding"), [
    (None, False, Finding.UNKNOWN),
    (job(LocalState.RUNNING, remote_name="projects/1/locations/l/tuningJobs/R"), False,
     Finding.OURS),
    (job(LocalState.SUBMITTING), False, Finding.ADOPT),
    (job(LocalState.QUEUED), False, Finding.ADOPT),
    (job(LocalState.SUBMITTING), True, Finding.UNDECIDED),
    (job(LocalState.RUNNING, remote_name="projects/1/locations/l/tuningJobs/OTHER"), False,
     Finding.DUPLICATE),
    (job(LocalState.CANCELLED), False, Finding.LATE),
    (job(LocalState.SUCCEEDED, remote_name="projects/1/locations/l/tuningJobs/OTHER"), False,
     Finding.LATE),
    (job(LocalState.SUCCEEDED, remote_name="projects/1/locations/l/tuningJobs/R"), False,
     Finding.OURS),  # a lagging list still shows it active
])
def test_what_a_swept_remote_job_is(local: Job | None, in_flight: bool, finding: Finding) -> None:
    """The sweep's classification of remote job R against the local job of its label."""
    assert classify("R", local, create_in_flight=in_flight) is finding


def test_the_absence_rule_is_built_from_the_reconcile_section() -> None:
    """AbsenceRule.from_settings takes every [reconcile] key as it is, plus the request timeout
    and the leader grace, so no setting is renamed or dropped on the way."""
    section = ReconcileSettings(list_lag_s=1.5, absent_confirmations=4, confirm_spacing_s=2.5,
                                not_found_confirm_s=3.5)
    rule = AbsenceRule.from_settings(section, request_timeout_s=7.0, leader_grace_s=10.0)
    assert (rule.list_lag_s, rule.absent_confirmations, rule.confirm_spacing_s,
            rule.not_found_confirm_s) == (1.5, 4, 2.5, 3.5)
    assert rule.landing_window_s == 7.0 + 1.5 + 10.0
