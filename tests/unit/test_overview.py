"""The overview's pure parts: limits in use, recent failures, the head of the queue, reasons."""

from __future__ import annotations

from tuningd.config import SchedulingSettings
from tuningd.core import limits
from tuningd.core.model import Job, LocalState
from tuningd.core.overview import (
    FAILURE_WINDOW_S,
    FAILURES_SHOWN,
    limit_uses,
    merged_head,
    queue_head,
    recent_failures,
)
from tuningd.core.workset import WorkingSet
from tuningd.http.statuspage import duration, reason_cell
from tuningd.vertex import wire

NOW = 1_800_000_000.0


def _job(n: int, state: LocalState = LocalState.QUEUED, **changes: object) -> Job:
    job = Job(id=f"j{n:03d}", project="p", location="us-central1", spec_json="{}",
              base_model="gemini-2.5-flash", state=state, created_at=NOW - 1000 + n,
              updated_at=NOW)
    return job.evolve(**changes)


def test_limit_uses_list_every_limited_scope_with_its_active_count() -> None:
    """Global, each configured location and base model (bare id) are listed with the active
    jobs in them; a cap lowered by 429s shows beside the configured one."""
    configured = limits.Limits(max_active=4, per_location={"us-central1": 3, "europe-west4": 1},
                               per_base_model={"publishers/google/models/gemini-2.5-flash": 2})
    lowered = limits.AdaptiveLimits().on_throttled([limits.GLOBAL], {limits.GLOBAL: 2})
    active = [_job(1, LocalState.RUNNING), _job(2, LocalState.SUBMITTING)]
    uses = limit_uses(active, configured, lowered)
    assert [(u.scope.kind.value, u.scope.name, u.active, u.limit, u.configured) for u in uses] == [
        ("global", "", 2, 2, 4),
        ("location", "europe-west4", 0, 1, 1),
        ("location", "us-central1", 2, 3, 3),
        ("base_model", "gemini-2.5-flash", 2, 2, 2),
    ]
    assert [u.lowered for u in uses] == [True, False, False, False]


def test_recent_failures_are_the_newest_ends_within_the_window_once_each() -> None:
    """Only failed jobs that ended within the window count, newest end first, each id once,
    at most FAILURES_SHOWN."""
    old = _job(1, LocalState.FAILED, ended_at=NOW - FAILURE_WINDOW_S - 1)
    cancelled = _job(2, LocalState.CANCELLED, ended_at=NOW - 5)
    fresh = [_job(10 + i, LocalState.FAILED, ended_at=NOW - 100 + i) for i in range(30)]
    got = recent_failures([old, cancelled, *fresh, *fresh], NOW)
    assert len(got) == FAILURES_SHOWN
    assert [j.id for j in got] == [j.id for j in reversed(fresh)][:FAILURES_SHOWN]


def test_the_queue_head_skips_jobs_that_left_the_queue_since_the_sort() -> None:
    """Ids of the sorted order that started or vanished since are left out; positions stay
    those of the sort."""
    jobs = {j.id: j for j in (_job(1), _job(2, LocalState.SUBMITTING), _job(3))}
    head = queue_head(["j002", "j001", "j404", "j003"], {"j002": 1, "j001": 2, "j003": 4}, jobs)
    assert [(q.job.id, q.position) for q in head] == [("j001", 2), ("j003", 4)]


def test_the_merged_head_follows_the_queue_order_across_groups() -> None:
    """The head merged from the working set's groups (places and base models) is the queue
    order: priority down, then oldest, with positions 1.. and queued jobs only."""
    ws = WorkingSet()
    for n, (location, model, priority) in enumerate([
            ("us-central1", "gemini-2.5-flash", 0), ("europe-west4", "gemini-2.5-pro", 3),
            ("us-central1", "gemini-2.5-pro", 3), ("us-central1", "gemini-2.5-flash", 7)]):
        ws[f"j{n:03d}"] = _job(n, location=location, base_model=model, priority=priority)
    ws["j009"] = _job(9, LocalState.RUNNING)
    settings = SchedulingSettings(aging_interval_s=3600.0)
    head = merged_head(ws.groups.values(), NOW, settings)
    assert [(q.job.id, q.position) for q in head] == [
        ("j003", 1), ("j001", 2), ("j002", 3), ("j000", 4)]
    assert [ws.position(q.job.id, NOW, settings) for q in head] == [1, 2, 3, 4]


def test_durations_read_shortly() -> None:
    """Seconds, minutes, hours and days each read in their two largest units."""
    assert [duration(s) for s in (-3, 42, 185, 7800, 3 * 86400 + 4 * 3600 + 59)] == [
        "0 s", "42 s", "3 min 05 s", "2 h 10 min", "3 d 4 h"]


def test_a_reason_cell_shows_the_last_error_and_next_attempt_escaped() -> None:
    """The job view's lastError (status, message, when) and nextAttemptTime read as text with
    relative times; markup in a message stays text; a queued job of a paused place says so."""
    reasons = {"lastError": {"code": 16, "status": "UNAUTHENTICATED",
                             "message": "no usable <credentials> & \"such\"",
                             "time": wire.format_timestamp(NOW - 65)},
               "nextAttemptTime": wire.format_timestamp(NOW + 30)}
    cell = reason_cell(_job(1), reasons, NOW, {("p", "us-central1")})
    assert ("UNAUTHENTICATED: no usable &lt;credentials&gt; &amp; &quot;such&quot;" in cell)
    assert ">1 min 05 s ago<" in cell and ">in 30 s<" in cell
    assert "creates to this place are paused" in cell
    assert reason_cell(_job(2), {}, NOW) == '<span class="muted">-</span>'
