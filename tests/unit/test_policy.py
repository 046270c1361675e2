"""Unit tests for the pure policy: queue order, limits, budgets, polling intervals and backoff."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuningd.config import PollingSettings, RetrySettings, SchedulingSettings
from tuningd.core.budget import Budgets, BudgetSettings, BudgetSnapshot, LocationBudget, TokenBucket
from tuningd.core.limits import (
    GLOBAL,
    AdaptiveLimits,
    Limits,
    Scope,
    ScopeKind,
    active_counts,
    scopes_of,
)
from tuningd.core.model import ACTIVE_STATES, Job, LocalState
from tuningd.core.planner import ActionKind, plan
from tuningd.core.schedule import (
    after_restart,
    effective_priority,
    jittered,
    next_poll_interval,
    queue_order,
    retry_at,
    retry_delay,
    schedule_poll,
)

S = LocalState
NOW = 10_000.0
US = "us-central1"
EU = "europe-west4"
FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"
WAITING_FOR_QUOTA = "TUNING_JOB_STATE_WAITING_FOR_QUOTA"


def job(id: str, state: LocalState = S.QUEUED, *, location: str = US, base_model: str = FLASH,
        priority: int = 0, created_at: float = 0.0, next_action_at: float = 0.0,
        project: str = "p", **kw: Any) -> Job:
    if state in (S.PENDING, S.RUNNING, S.CANCELLING) and "remote_name" not in kw:
        kw["remote_name"] = f"projects/1/locations/{location}/tuningJobs/{id}"
    return Job(id=id, project=project, location=location, spec_json="{}",
               base_model=base_model, state=state, created_at=created_at,
               updated_at=created_at, priority=priority, next_action_at=next_action_at, **kw)


BIG = Limits(max_active=100)


# --- scopes, priority and queue order -------------------------------------------------------


def test_scopes_of_a_job_are_global_location_and_model() -> None:
    """A job counts in the global scope, its location and its base model."""
    assert scopes_of(job("a")) == (GLOBAL, Scope(ScopeKind.LOCATION, US),
                                   Scope(ScopeKind.BASE_MODEL, FLASH))


def test_active_counts_count_only_active_states() -> None:
    """Queued and terminal jobs do not count against limits; the four active states do."""
    jobs = [job(s.value, s) for s in LocalState]
    counts = active_counts(jobs)
    assert counts[GLOBAL] == len(ACTIVE_STATES) == 4
    assert counts[Scope(ScopeKind.LOCATION, US)] == 4


def test_limits_for_unconfigured_scope_is_unlimited() -> None:
    """Location and model scopes without a configured value have no cap."""
    limits = Limits(max_active=3, per_location={US: 2})
    assert limits.limit_for(GLOBAL) == 3
    assert limits.limit_for(Scope(ScopeKind.LOCATION, US)) == 2
    assert limits.limit_for(Scope(ScopeKind.LOCATION, EU)) is None
    assert limits.limit_for(Scope(ScopeKind.BASE_MODEL, FLASH)) is None


def test_effective_priority_ages_one_point_per_interval() -> None:
    """A queued job gains one priority point per aging interval waited."""
    sched = SchedulingSettings(aging_interval_s=600)
    j = job("a", priority=2, created_at=NOW - 1799)
    assert effective_priority(j, NOW, sched) == 4
    assert effective_priority(j, NOW + 1, sched) == 5


def test_effective_priority_bonus_cap_and_no_cap() -> None:
    """The aging bonus respects its cap, and a cap of 0 leaves it uncapped."""
    j = job("a", priority=1, created_at=0.0)
    assert effective_priority(j, 6000, SchedulingSettings(600, max_aging_bonus=3)) == 4
    assert effective_priority(j, 6000, SchedulingSettings(600, max_aging_bonus=0)) == 11


def test_queue_order_priority_then_oldest_then_id() -> None:
    """Higher priority first, then older, then by id for a stable order."""
    jobs = [job("c", created_at=NOW - 5), job("b", priority=5, created_at=NOW),
            job("a", created_at=NOW - 5), job("d", created_at=NOW - 10),
            job("x", S.RUNNING, priority=99)]
    order = queue_order(jobs, NOW, SchedulingSettings(aging_interval_s=1e9))
    assert [j.id for j in order] == ["b", "d", "a", "c"]


def test_aging_lets_old_low_priority_overtake() -> None:
    """A low-priority job that waited long enough beats a fresh high-priority one."""
    sched = SchedulingSettings(aging_interval_s=600)
    old = job("old", priority=0, created_at=NOW - 6000)  # +10
    new = job("new", priority=5, created_at=NOW)
    assert [j.id for j in queue_order([new, old], NOW, sched)] == ["old", "new"]


# --- plan: submissions and limits ----------------------------------------------------------


def test_plan_submits_highest_priority_within_global_limit() -> None:
    """With room for two, the two best queued jobs are submitted and the rest wait."""
    jobs = [job("a", priority=1), job("b", priority=3), job("c", priority=2)]
    p = plan(jobs, NOW, limits=Limits(max_active=2))
    assert p.submits == ("b", "c")
    assert p.waiting_for_slot == ("a",)


def test_plan_counts_existing_active_jobs() -> None:
    """Every active state occupies a slot, so a full global scope submits nothing."""
    for state in ACTIVE_STATES:
        jobs = [job("busy", state), job("q")]
        p = plan(jobs, NOW, limits=Limits(max_active=1))
        assert p.submits == (), state
        assert p.waiting_for_slot == ()  # a full global scope: the queue is not even read


def test_plan_ignores_terminal_jobs_for_limits() -> None:
    """Ended jobs free their slot."""
    jobs = [job("done", S.SUCCEEDED), job("gone", S.CANCELLED), job("q")]
    assert plan(jobs, NOW, limits=Limits(max_active=1)).submits == ("q",)


def test_plan_skips_jobs_not_yet_due_and_reports_next_due() -> None:
    """A queued job in backoff is not submitted; its time is the next wake-up."""
    jobs = [job("later", priority=9, next_action_at=NOW + 30), job("now")]
    p = plan(jobs, NOW, limits=BIG)
    assert p.submits == ("now",)
    assert p.next_due_at == NOW + 30


def test_plan_per_location_limit_lets_other_locations_proceed() -> None:
    """A full location blocks only its own jobs; a lower-priority job elsewhere goes ahead."""
    limits = Limits(max_active=10, per_location={US: 1})
    jobs = [job("run", S.RUNNING), job("us", priority=5), job("eu", location=EU)]
    p = plan(jobs, NOW, limits=limits)
    assert p.submits == ("eu",)
    assert p.waiting_for_slot == ("us",)


def test_plan_per_base_model_limit() -> None:
    """A base-model cap limits that model only."""
    limits = Limits(max_active=10, per_base_model={PRO: 1})
    jobs = [job("p1", base_model=PRO, created_at=1), job("p2", base_model=PRO, created_at=2),
            job("f1", base_model=FLASH, created_at=3)]
    assert plan(jobs, NOW, limits=limits).submits == ("p1", "f1")


def test_plan_counts_jobs_picked_earlier_in_the_same_plan() -> None:
    """Jobs chosen earlier in one plan take their slots in every scope."""
    limits = Limits(max_active=10, per_location={US: 2}, per_base_model={FLASH: 3})
    jobs = [job(f"u{i}", created_at=i) for i in range(4)] + [
        job(f"e{i}", location=EU, created_at=10 + i) for i in range(4)]
    p = plan(jobs, NOW, limits=limits)
    assert p.submits == ("u0", "u1", "e0")


def test_plan_skips_busy_jobs_but_counts_them() -> None:
    """A job with a call in flight gets no action but still holds its slot; a queued job whose
    create is under way (busy, `submitting` not yet committed) holds one too (breakage 3)."""
    jobs = [job("sub", S.SUBMITTING, submit_started_at=0.0), job("q1"), job("q2", created_at=1)]
    p = plan(jobs, NOW, limits=Limits(max_active=2), busy={"sub", "q1"})
    assert p.submits == ()
    assert p.waiting_for_slot == ()  # the global scope is full: the queue is not read
    assert all("sub" not in a.job_ids for a in p.actions)
    p = plan(jobs, NOW, limits=Limits(max_active=3), busy={"sub", "q1"})
    assert p.submits == ("q2",)


def test_plan_without_accepting_submits() -> None:
    """During shutdown no creates are planned, but polls still are."""
    jobs = [job("q"), job("r", S.RUNNING)]
    p = plan(jobs, NOW, limits=BIG, accept_submits=False)
    assert p.submits == ()
    assert p.of_kind(ActionKind.POLL_GET)[0].job_ids == ("r",)


# --- adaptive limits -------------------------------------------------------------------------


def test_throttle_drops_scope_to_active_count_and_at_least_one() -> None:
    """After a create 429 the scope's cap is its active count, never below 1."""
    limits = Limits(max_active=5)
    us = Scope(ScopeKind.LOCATION, US)
    ad = AdaptiveLimits().on_throttled([GLOBAL, us], {GLOBAL: 3})
    assert ad.effective(GLOBAL, limits) == 3
    assert ad.effective(us, limits) == 1  # no configured cap, still capped at 1
    assert AdaptiveLimits().effective(us, limits) is None


def test_adaptive_cap_never_exceeds_configured() -> None:
    """A lowered cap above a (reloaded) smaller configured limit gives way to it."""
    ad = AdaptiveLimits(caps={GLOBAL: 4})
    assert ad.effective(GLOBAL, Limits(max_active=2)) == 2


def test_adaptive_recovers_additively_after_successes() -> None:
    """Each `recover_after_successes` creates raise the cap by one, up to the configured limit."""
    limits = Limits(max_active=4)
    ad = AdaptiveLimits(recover_after_successes=2).on_throttled([GLOBAL], {GLOBAL: 1})
    seen = []
    for _ in range(7):
        ad = ad.on_create_succeeded([GLOBAL], limits)
        seen.append(ad.effective(GLOBAL, limits))
    assert seen == [1, 2, 2, 3, 3, 4, 4]
    assert GLOBAL not in ad.caps  # fully recovered: forgotten


def test_adaptive_success_in_unlowered_scope_is_ignored() -> None:
    """Successes only matter for scopes that were lowered."""
    ad = AdaptiveLimits().on_create_succeeded([GLOBAL], Limits())
    assert ad == AdaptiveLimits()


def test_adaptive_throttle_resets_success_count_and_reset_clears() -> None:
    """A new 429 restarts the recovery count; reset forgets all caps."""
    ad = AdaptiveLimits(recover_after_successes=3).on_throttled([GLOBAL], {GLOBAL: 2})
    ad = ad.on_create_succeeded([GLOBAL], Limits(max_active=9))
    assert ad.successes[GLOBAL] == 1
    ad = ad.on_throttled([GLOBAL], {GLOBAL: 2})
    assert ad.successes[GLOBAL] == 0
    assert ad.reset().caps == {}


def test_plan_respects_adaptive_limit() -> None:
    """The planner uses the lowered cap, not the configured one."""
    jobs = [job("r", S.RUNNING), job("q1"), job("q2", created_at=1)]
    ad = AdaptiveLimits().on_throttled([GLOBAL], {GLOBAL: 1})
    assert plan(jobs, NOW, limits=Limits(max_active=3), adaptive=ad).submits == ()
    ad = ad.on_create_succeeded([GLOBAL], Limits(max_active=3))
    assert plan(jobs, NOW, limits=Limits(max_active=3), adaptive=ad).submits == ("q1",)


# --- plan: cancels, reconciles, polls and their order -----------------------------------------


def test_plan_sends_cancel_once_for_cancelling_jobs() -> None:
    """A cancelling job with our intent and no cancel sent gets one cancel call, not a poll."""
    jobs = [job("c", S.CANCELLING, cancel_requested=True),
            job("sent", S.CANCELLING, cancel_requested=True, cancel_sent_at=1.0),
            job("ext", S.CANCELLING)]
    p = plan(jobs, NOW, limits=BIG)
    assert p.cancels == ("c",)
    polled = {i for a in p.actions if a.kind is not ActionKind.CANCEL for i in a.job_ids}
    assert polled == {"sent", "ext"}


def test_plan_cancel_retry_waits_for_backoff() -> None:
    """A cancel that failed transiently is retried only when due."""
    j = job("c", S.CANCELLING, cancel_requested=True, next_action_at=NOW + 8)
    p = plan([j], NOW, limits=BIG)
    assert p.actions == ()
    assert p.next_due_at == NOW + 8


def test_reconcile_waits_for_its_due_time() -> None:
    """A submitting job is reconciled once its next_action_at has come, not before."""
    j = job("s", S.SUBMITTING, submit_started_at=NOW - 50, next_action_at=NOW + 10)
    p = plan([j], NOW, limits=BIG)
    assert p.actions == ()
    assert p.next_due_at == NOW + 10
    p = plan([j], NOW + 10, limits=BIG)
    assert [(a.kind, a.job_ids) for a in p.actions] == [(ActionKind.RECONCILE, ("s",))]


def test_reconciles_group_by_project_and_location() -> None:
    """Due submitting jobs of one project and location share one list call."""
    jobs = [job("a", S.SUBMITTING, submit_started_at=0.0),
            job("b", S.SUBMITTING, submit_started_at=0.0, next_action_at=1.0),
            job("c", S.SUBMITTING, submit_started_at=0.0, location=EU),
            job("d", S.SUBMITTING, submit_started_at=0.0, project="q")]
    recs = plan(jobs, NOW, limits=BIG).of_kind(ActionKind.RECONCILE)
    assert {(a.project, a.location, a.job_ids) for a in recs} == {
        ("p", US, ("a", "b")), ("p", EU, ("c",)), ("q", US, ("d",))}


def test_single_due_job_is_polled_by_get() -> None:
    """A lone due job in a location is refreshed with a GET; others elsewhere stay scheduled."""
    jobs = [job("r", S.RUNNING), job("later", S.RUNNING, location=EU, next_action_at=NOW + 200)]
    p = plan(jobs, NOW, limits=BIG)
    assert [(a.kind, a.job_ids) for a in p.actions] == [(ActionKind.POLL_GET, ("r",))]
    assert p.next_due_at == NOW + 200


def test_two_due_jobs_in_a_location_use_one_list_call() -> None:
    """Two due jobs of a location are refreshed by one list that also covers its other jobs."""
    jobs = [job("a", S.RUNNING), job("b", S.PENDING),
            job("far", S.RUNNING, next_action_at=NOW + 100), job("eu", S.RUNNING, location=EU)]
    p = plan(jobs, NOW, limits=BIG)
    lists = p.of_kind(ActionKind.POLL_LIST)
    assert [(a.location, set(a.job_ids)) for a in lists] == [(US, {"a", "b", "far"})]
    assert [a.job_ids for a in p.of_kind(ActionKind.POLL_GET)] == [("eu",)]
    assert p.next_due_at is None


def test_one_due_job_lists_when_the_location_has_more() -> None:
    """One due job with another active job in its location still takes one list (same cost)."""
    jobs = [job("a", S.RUNNING), job("b", S.RUNNING, next_action_at=NOW + 100)]
    p = plan(jobs, NOW, limits=BIG)
    assert [(a.kind, set(a.job_ids)) for a in p.actions] == [(ActionKind.POLL_LIST, {"a", "b"})]


def test_coalesce_window_limits_the_batch() -> None:
    """With a coalesce window only jobs due within it ride along; the rest stay scheduled."""
    pol = PollingSettings(batch_coalesce_s=15)
    jobs = [job("a", S.RUNNING), job("b", S.PENDING),
            job("soon", S.RUNNING, next_action_at=NOW + 10),
            job("far", S.RUNNING, next_action_at=NOW + 100)]
    p = plan(jobs, NOW, limits=BIG, polling=pol)
    assert [set(a.job_ids) for a in p.actions] == [{"a", "b", "soon"}]
    assert p.next_due_at == NOW + 100
    alone = plan([jobs[0], jobs[3]], NOW, limits=BIG, polling=pol)
    assert [(a.kind, a.job_ids) for a in alone.actions] == [(ActionKind.POLL_GET, ("a",))]


def test_refused_batch_listing_falls_back_to_gets() -> None:
    """Where the list filter is refused, each due job gets its own GET."""
    jobs = [job("a", S.RUNNING), job("b", S.RUNNING)]
    p = plan(jobs, NOW, limits=BIG, batch_refused={US})
    assert sorted(a.job_ids for a in p.of_kind(ActionKind.POLL_GET)) == [("a",), ("b",)]
    assert p.of_kind(ActionKind.POLL_LIST) == ()


def test_actions_are_ordered_cancel_create_reconcile_poll() -> None:
    """Within the plan, cancels come first, then creates, then reconciles and polls."""
    jobs = [job("r", S.RUNNING), job("q"), job("s", S.SUBMITTING, submit_started_at=0.0),
            job("c", S.CANCELLING, cancel_requested=True)]
    p = plan(jobs, NOW, limits=BIG)
    assert [a.kind for a in p.actions] == [ActionKind.CANCEL, ActionKind.SUBMIT,
                                           ActionKind.RECONCILE, ActionKind.POLL_GET]


# --- plan: request budget --------------------------------------------------------------------


def test_budget_goes_to_cancel_then_create_then_polls() -> None:
    """With two request tokens, the cancel and the create get them; the poll waits."""
    jobs = [job("r", S.RUNNING), job("q"), job("c", S.CANCELLING, cancel_requested=True)]
    p = plan(jobs, NOW, limits=BIG, budgets={US: BudgetSnapshot(requests=2, creates=5)})
    assert [a.kind for a in p.actions] == [ActionKind.CANCEL, ActionKind.SUBMIT]
    assert p.over_budget == ("r",)


def test_budget_is_per_location() -> None:
    """An exhausted location does not hold back another location."""
    jobs = [job("us", S.RUNNING), job("eu", S.RUNNING, location=EU)]
    budgets = {US: BudgetSnapshot(0, 0), EU: BudgetSnapshot(1, 0)}
    p = plan(jobs, NOW, limits=BIG, budgets=budgets)
    assert [a.job_ids for a in p.actions] == [("eu",)]
    assert p.over_budget == ("us",)


def test_create_needs_a_create_token_too() -> None:
    """A create needs both a request and a create token."""
    p = plan([job("q")], NOW, limits=BIG, budgets={US: BudgetSnapshot(requests=9, creates=0)})
    assert p.submits == ()
    assert p.over_budget == ("q",)


def test_budget_blocked_job_keeps_its_slot() -> None:
    """A high-priority job short of budget reserves its slot against lower-priority jobs."""
    jobs = [job("hi", priority=9), job("lo", location=EU)]
    budgets = {US: BudgetSnapshot(0, 0), EU: BudgetSnapshot(5, 5)}
    p = plan(jobs, NOW, limits=Limits(max_active=1), budgets=budgets)
    assert p.submits == ()
    assert p.over_budget == ("hi",)
    assert p.waiting_for_slot == ("lo",)


def test_missing_location_budget_means_no_budget() -> None:
    """A location absent from the budget map gets no calls (the engine must pass it)."""
    p = plan([job("r", S.RUNNING)], NOW, limits=BIG, budgets={})
    assert p.actions == ()
    assert p.over_budget == ("r",)


def test_batch_over_budget_reports_due_jobs() -> None:
    """A list poll without budget leaves its due jobs over budget."""
    jobs = [job("a", S.RUNNING), job("b", S.RUNNING)]
    p = plan(jobs, NOW, limits=BIG, budgets={US: BudgetSnapshot(0, 0)})
    assert set(p.over_budget) == {"a", "b"}


# --- token buckets ---------------------------------------------------------------------------


def test_bucket_starts_full_and_refills_at_rate() -> None:
    """A bucket holds burst_s seconds of rate and refills linearly."""
    b = TokenBucket(60, now=0.0, burst_s=5)  # 1/s, capacity 5
    assert all(b.take(0.0) for _ in range(5))
    assert not b.take(0.0)
    assert b.seconds_until(0.0) == pytest.approx(1.0)
    assert b.take(1.0)
    assert not b.take(1.0)
    assert b.available(100.0) == pytest.approx(5.0)


def test_bucket_take_with_cost_and_failed_take_takes_nothing() -> None:
    """A take larger than the tokens fails without taking any."""
    b = TokenBucket(60, now=0.0, burst_s=3)
    assert not b.take(0.0, cost=4)
    assert b.available(0.0) == pytest.approx(3.0)
    assert b.take(0.0, cost=3)
    assert b.seconds_until(0.0, cost=2) == pytest.approx(2.0)


def test_bucket_capacity_is_at_least_one_token() -> None:
    """Even a slow bucket can hold one whole request."""
    b = TokenBucket(1, now=0.0, burst_s=1)
    assert b.capacity == 1.0
    assert b.take(0.0)


def test_bucket_ignores_clock_going_backwards() -> None:
    """A `now` earlier than the last one neither adds nor removes tokens."""
    b = TokenBucket(60, now=100.0, burst_s=2)
    b.take(100.0, 2)
    assert b.available(50.0) == 0.0
    assert b.available(101.0) == pytest.approx(1.0)


def test_slow_down_halves_rate_and_recovers_stepwise() -> None:
    """A 429 halves the rate; each quiet recovery period doubles it back up to full."""
    b = TokenBucket(120, now=0.0, recover_after_s=60)  # 2/s
    b.slow_down(0.0)
    assert b.rate_per_s == pytest.approx(1.0)
    b.slow_down(10.0)
    assert b.rate_per_s == pytest.approx(0.5)
    b.refill(69.0)
    assert b.rate_per_s == pytest.approx(0.5)
    b.refill(70.0)
    assert b.rate_per_s == pytest.approx(1.0)
    b.refill(130.0)
    assert b.rate_per_s == pytest.approx(2.0)
    b.refill(1000.0)
    assert b.rate_per_s == pytest.approx(2.0)


def test_slow_down_has_a_floor() -> None:
    """Repeated 429s cannot stop the bucket entirely."""
    b = TokenBucket(160, now=0.0, min_rate_fraction=1 / 16)
    for i in range(20):
        b.slow_down(float(i))
    assert b.rate_per_s == pytest.approx(160 / 60 / 16)


def test_slow_refill_earns_at_slow_rate_until_recovery() -> None:
    """Tokens earned across a recovery point use the slow rate before it and full after."""
    b = TokenBucket(60, now=0.0, burst_s=1000, recover_after_s=10)  # 1/s
    b.take(0.0, b.available(0.0))
    b.slow_down(0.0)  # 0.5/s until t=10
    assert b.available(20.0) == pytest.approx(5.0 + 10.0)


def test_bucket_rejects_non_positive_rate() -> None:
    """A zero rate is a configuration error."""
    with pytest.raises(ValueError):
        TokenBucket(0, now=0.0)


def test_location_budget_create_takes_both_or_nothing() -> None:
    """A create takes a request and a create token, and fails whole if either is missing."""
    lb = LocationBudget(BudgetSettings(requests_per_minute=60, creates_per_minute=6,
                                       burst_s=10), now=0.0)  # 10 requests, 1 create
    assert lb.snapshot(0.0) == BudgetSnapshot(requests=10, creates=1)
    assert lb.take_create(0.0)
    assert not lb.take_create(0.0)  # no create token
    assert lb.snapshot(0.0) == BudgetSnapshot(requests=9, creates=0)
    assert lb.snapshot(10.0) == BudgetSnapshot(requests=10, creates=1)
    assert lb.take_request(10.0, cost=10)
    assert not lb.take_create(10.0)  # create token there, request token not
    assert lb.snapshot(10.0) == BudgetSnapshot(requests=0, creates=1)
    assert lb.take_create(11.0)


def test_location_budget_slow_down_scopes() -> None:
    """Any 429 slows the request bucket; only a create 429 slows the create bucket."""
    lb = LocationBudget(BudgetSettings(), now=0.0)
    lb.slow_down(0.0)
    assert lb.requests.rate_fraction == 0.5 and lb.creates.rate_fraction == 1.0
    lb.slow_down(1.0, create=True)
    assert lb.requests.rate_fraction == 0.25 and lb.creates.rate_fraction == 0.5


def test_budgets_make_one_bucket_pair_per_location() -> None:
    """Budgets hands out one LocationBudget per location and snapshots them for plan()."""
    budgets = Budgets(BudgetSettings(requests_per_minute=60, creates_per_minute=60, burst_s=2))
    assert budgets.location(US, 0.0) is budgets.location(US, 5.0)
    budgets.location(US, 0.0).take_request(0.0, 2)
    snap = budgets.snapshot([US, EU, US], 0.0)
    assert snap == {US: BudgetSnapshot(0, 2), EU: BudgetSnapshot(2, 2)}


# --- polling intervals and backoff -----------------------------------------------------------

POL = PollingSettings(initial_interval_s=30, max_interval_s=300, multiplier=2.0, jitter=0.2)


def test_poll_interval_grows_while_unchanged_and_caps() -> None:
    """Unchanged observations double the interval up to the maximum."""
    j = job("r", S.RUNNING)
    seen = []
    for _ in range(6):
        interval = next_poll_interval(j, False, POL)
        seen.append(interval)
        j = j.evolve(poll_interval_s=interval)
    assert seen == [30, 60, 120, 240, 300, 300]


def test_poll_interval_resets_after_a_change() -> None:
    """A change brings the interval back to the initial value."""
    j = job("r", S.RUNNING, poll_interval_s=240)
    assert next_poll_interval(j, True, POL) == 30


def test_waiting_for_quota_polls_slowly() -> None:
    """A job waiting for quota polls at the maximum interval even right after a change."""
    j = job("p", S.PENDING, remote_substate=WAITING_FOR_QUOTA, poll_interval_s=30)
    assert next_poll_interval(j, True, POL) == 300
    assert next_poll_interval(j, False, POL) == 300


def test_cancelling_polls_at_initial_interval() -> None:
    """A cancelling job is watched closely until it ends."""
    j = job("c", S.CANCELLING, poll_interval_s=300)
    assert next_poll_interval(j, False, POL) == 30


def test_pending_cap() -> None:
    """While pending the interval can be capped lower than the maximum."""
    pol = PollingSettings(initial_interval_s=30, max_interval_s=300, pending_max_interval_s=90)
    j = job("p", S.PENDING, poll_interval_s=120)
    assert next_poll_interval(j, False, pol) == 90
    assert next_poll_interval(j.evolve(state=S.RUNNING), False, pol) == 240


def test_jitter_bounds_with_seeded_rng() -> None:
    """Jittered delays stay within ± the jitter fraction and actually vary."""
    rng = random.Random(42)
    values = [jittered(100.0, 0.2, rng) for _ in range(2000)]
    assert min(values) >= 80.0 and max(values) <= 120.0
    assert max(values) - min(values) > 30.0
    assert jittered(100.0, 0.0, rng) == 100.0


def test_schedule_poll_stores_base_interval_and_jittered_time() -> None:
    """schedule_poll returns the un-jittered interval and a jittered next poll time."""
    rng = random.Random(7)
    j = job("r", S.RUNNING, poll_interval_s=60)
    s = schedule_poll(j, False, NOW, POL, rng)
    assert s.interval_s == 120
    assert NOW + 96 <= s.next_poll_at <= NOW + 144
    assert s == schedule_poll(j, False, NOW, POL, random.Random(7))


def test_retry_delay_full_jitter_bounds() -> None:
    """Backoff is uniform between zero and the capped exponential bound."""
    rng = random.Random(1)
    for attempt, bound in [(1, 2.0), (2, 4.0), (3, 8.0), (9, 300.0), (10_000, 300.0)]:
        values = [retry_delay(attempt, 2.0, 300.0, rng) for _ in range(500)]
        assert min(values) >= 0.0 and max(values) <= bound
        assert max(values) > bound * 0.9  # the whole range is used
    assert retry_delay(0, 2.0, 300.0, rng) <= 2.0


def test_retry_at_uses_the_next_retry_number() -> None:
    """retry_at backs off by the job's retry count plus one."""
    j = job("r", S.RUNNING, retry_count=2)
    rng = random.Random(3)
    t = retry_at(j, NOW, RetrySettings(base_s=1.0, cap_s=60.0), rng)
    assert NOW <= t <= NOW + 4.0


# --- properties and the read-reduction target --------------------------------------------------

_job_states = st.sampled_from([S.QUEUED, S.QUEUED, S.SUBMITTING, S.PENDING, S.RUNNING,
                               S.CANCELLING, S.SUCCEEDED])


@st.composite
def _jobs(draw: st.DrawFn) -> list[Job]:
    n = draw(st.integers(0, 25))
    out = []
    for i in range(n):
        state = draw(_job_states)
        out.append(job(
            f"j{i}", state,
            location=draw(st.sampled_from([US, EU, "asia-east1"])),
            base_model=draw(st.sampled_from([FLASH, PRO])),
            priority=draw(st.integers(-3, 3)),
            created_at=draw(st.floats(0, NOW)),
            next_action_at=draw(st.sampled_from([0.0, NOW + 5])),
            submit_started_at=0.0 if state is S.SUBMITTING else None,
            cancel_requested=state is S.CANCELLING and draw(st.booleans())))
    return out


@settings(max_examples=300, deadline=None)
@given(_jobs(), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4),
       st.integers(0, 3), st.integers(0, 3))
def test_plan_never_exceeds_any_limit(jobs: list[Job], max_active: int, us_cap: int,
                                      pro_cap: int, requests: int, creates: int) -> None:
    """After the planned submits no scope exceeds its cap, budgets hold, no job appears twice."""
    limits = Limits(max_active=max_active, per_location={US: us_cap},
                    per_base_model={PRO: pro_cap})
    budgets = {loc: BudgetSnapshot(requests, creates) for loc in (US, EU, "asia-east1")}
    p = plan(jobs, NOW, limits=limits, budgets=budgets)
    by_id = {j.id: j for j in jobs}
    submitted = [by_id[i] for i in p.submits]
    assert all(j.state is S.QUEUED and j.next_action_at <= NOW for j in submitted)
    before = active_counts(jobs)
    after = active_counts([*jobs, *(j.evolve(state=S.SUBMITTING) for j in submitted)])
    for scope, count in after.items():
        cap = limits.limit_for(scope)
        if cap is not None and count > before.get(scope, 0):
            assert count <= cap, scope
    ids = [i for a in p.actions for i in a.job_ids]
    assert len(ids) == len(set(ids))
    for loc in budgets:
        here = [a for a in p.actions if a.location == loc]
        assert len(here) <= requests
        assert sum(a.kind is ActionKind.SUBMIT for a in here) <= creates


def test_batch_polling_and_growth_cut_reads_twentyfold() -> None:
    """Ten quiet running jobs for two hours need >= 20x fewer reads than a GET each per 30 s."""
    rng = random.Random(2024)
    jobs = {f"j{i}": job(f"j{i}", S.RUNNING, next_action_at=float(i)) for i in range(10)}
    now, reads, end = 0.0, 0, 7200.0
    while now < end:
        p = plan(list(jobs.values()), now, limits=BIG, polling=POL)
        for action in p.actions:
            reads += 1
            for jid in action.job_ids:
                s = schedule_poll(jobs[jid], False, now, POL, rng)
                jobs[jid] = jobs[jid].evolve(poll_interval_s=s.interval_s,
                                             next_action_at=s.next_poll_at)
        now = max(now, min(j.next_action_at for j in jobs.values()))
    baseline = len(jobs) * end / POL.initial_interval_s
    assert reads * 20 <= baseline, (reads, baseline)


def test_after_a_restart_jobs_with_a_remote_side_look_at_once_and_queued_ones_wait() -> None:
    """schedule.after_restart brings a submitting, pending, running or cancelling job that was not
    due yet to `now`, and leaves queued jobs and jobs already due as they were."""
    now = 1_000.0
    for state in (LocalState.SUBMITTING, LocalState.PENDING, LocalState.RUNNING,
                  LocalState.CANCELLING):
        assert after_restart(job("j", state, next_action_at=now + 60), now) == now
        assert after_restart(job("j", state, next_action_at=now - 5), now) == now - 5
    assert after_restart(job("j", S.QUEUED, next_action_at=now + 60), now) == now + 60
