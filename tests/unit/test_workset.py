"""The working set's indexes and the planner's walk over them (issue 11: a round costs the jobs
that can act, not the queue)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from tuningd.config import SchedulingSettings
from tuningd.core.limits import Limits, scopes_of
from tuningd.core.model import Job, LocalState
from tuningd.core.planner import plan
from tuningd.core.schedule import queue_order
from tuningd.core.workset import QueueGroup, WorkingSet

NOW = 1_000_000.0


def job(job_id: str, state: LocalState = LocalState.QUEUED, **kw: Any) -> Job:
    fields: dict[str, Any] = {"project": "p", "location": "us-central1",
                              "base_model": "gemini-2.5-flash", "created_at": NOW - 100,
                              "next_action_at": 0.0}
    fields.update(kw)
    return Job(id=job_id, spec_json="{}", state=state, updated_at=fields["created_at"], **fields)


def test_jobs_move_between_queue_and_active_as_their_state_changes() -> None:
    """A queued job sits in its group; once it is submitting it is active; deleted, it is gone
    from both, and an emptied group disappears."""
    ws = WorkingSet()
    ws["a"] = job("a")
    assert ws.queued("a") is not None and "a" not in ws.active
    ws["a"] = job("a", LocalState.SUBMITTING)
    assert ws.queued("a") is None and "a" in ws.active and not ws.groups
    del ws["a"]
    assert "a" not in ws and not ws.active and len(ws) == 0


def test_queue_stats_follow_adds_and_removals_without_a_walk() -> None:
    """Depth and the oldest acceptance time stay right as the oldest jobs leave the queue."""
    ws = WorkingSet()
    for i in range(10):
        ws[f"j{i}"] = job(f"j{i}", created_at=NOW + i, location="eu" if i % 2 else "us")
    assert ws.queue_stats().depth == 10 and ws.queue_stats().oldest_created_at == NOW
    ws.pop("j0")
    ws["j1"] = job("j1", LocalState.SUBMITTING, created_at=NOW + 1)
    stats = ws.queue_stats()
    assert stats.depth == 8 and stats.oldest_created_at == NOW + 2


class _Unreadable:
    """A queue that fails the test if the planner reads it."""

    @property
    def groups(self) -> Mapping[tuple[str, str, str], QueueGroup]:
        raise AssertionError("the planner read the queue while the global scope was full")

    def queued(self, job_id: str) -> Job | None:
        return None


def test_a_full_global_scope_reads_nothing_of_the_queue() -> None:
    """With every global slot taken the planner plans the active jobs' calls only."""
    running = [job("r1", LocalState.RUNNING, remote_name="projects/p/locations/l/tuningJobs/1")]
    p = plan(running, NOW, limits=Limits(max_active=1), queue=_Unreadable())
    assert p.submits == ()


def test_a_group_held_by_a_full_scope_is_left_at_its_head() -> None:
    """A full location holds its whole group: only the head is reported, the rest unread, and
    a lower-priority group elsewhere goes ahead."""
    ws = WorkingSet()
    ws["run"] = job("run", LocalState.RUNNING)
    for i in range(50):
        ws[f"us{i}"] = job(f"us{i}", priority=5, created_at=NOW - 1000 + i)
    ws["eu"] = job("eu", location="europe-west4")
    p = plan(list(ws.active.values()), NOW, queue=ws,
             limits=Limits(max_active=10, per_location={"us-central1": 1}))
    assert p.submits == ("eu",)
    assert p.waiting_for_slot == ("us0",)


def _reference(jobs: list[Job], limits: Limits) -> list[str]:
    """The creates a plan makes, by walking the whole queue in order (the old planner)."""
    counts: dict[Any, int] = {}
    for j in jobs:
        if j.state is not LocalState.QUEUED:
            for s in scopes_of(j):
                counts[s] = counts.get(s, 0) + 1
    out = []
    for j in queue_order(jobs, NOW, SchedulingSettings()):
        if j.next_action_at > NOW:
            continue
        caps = [limits.limit_for(s) for s in scopes_of(j)]
        if any(c is not None and counts.get(s, 0) >= c
               for s, c in zip(scopes_of(j), caps, strict=True)):
            continue
        for s in scopes_of(j):
            counts[s] = counts.get(s, 0) + 1
        out.append(j.id)
    return out


def test_the_grouped_walk_submits_what_a_walk_of_the_whole_queue_would() -> None:
    """Over random queues, limits, priorities, ages and backoffs, the merged walk of the
    groups picks the same creates in the same order as walking the sorted queue."""
    rng = random.Random(7)
    for _ in range(300):
        jobs = []
        for i in range(rng.randint(0, 30)):
            state = rng.choice([LocalState.QUEUED] * 4 + [LocalState.RUNNING])
            jobs.append(job(
                f"j{i:02d}", state, location=rng.choice(["us", "eu", "asia"]),
                base_model=rng.choice(["gemini-2.5-flash", "gemini-2.5-pro"]),
                project=rng.choice(["p", "q"]), priority=rng.randint(-1, 2),
                created_at=NOW - rng.uniform(0, 7200),
                next_action_at=rng.choice([0.0, 0.0, 0.0, NOW + 5])))
        limits = Limits(max_active=rng.randint(1, 12),
                        per_location={"us": rng.randint(1, 4)},
                        per_base_model={"gemini-2.5-pro": rng.randint(1, 3)})
        assert list(plan(jobs, NOW, limits=limits).submits) == _reference(jobs, limits)


def test_positions_match_the_sorted_queue_through_adds_and_removals() -> None:
    """Queue positions from the groups equal the place in the fully sorted queue, as jobs are
    added after a sort and removed from the middle."""
    rng = random.Random(3)
    sched = SchedulingSettings(aging_interval_s=600.0)
    ws = WorkingSet()
    for i in range(200):
        ws[f"j{i:03d}"] = job(f"j{i:03d}", location=rng.choice(["us", "eu"]),
                              priority=rng.randint(0, 3), created_at=NOW - rng.uniform(0, 9000))
    ws.position("j000", NOW, sched)  # sorts every group
    for i in range(200, 260):
        ws[f"j{i:03d}"] = job(f"j{i:03d}", location=rng.choice(["us", "eu"]),
                              priority=rng.randint(0, 3), created_at=NOW - rng.uniform(0, 9000))
    for i in rng.sample(range(260), 80):
        ws.pop(f"j{i:03d}")
    order = queue_order(list(ws.values()), NOW, sched)
    assert [ws.position(j.id, NOW, sched) for j in order] == list(range(1, len(order) + 1))


def test_a_one_priority_group_keeps_its_order_as_time_passes() -> None:
    """With one priority aging cannot reorder a group, so positions hours later (without a new
    sort) still equal the fully sorted queue, capped aging bonus included."""
    sched = SchedulingSettings(aging_interval_s=60.0, max_aging_bonus=5)
    ws = WorkingSet()
    rng = random.Random(5)
    for i in range(100):
        ws[f"j{i:03d}"] = job(f"j{i:03d}", created_at=NOW - rng.uniform(0, 3600))
    ws.position("j000", NOW, sched)
    for i in range(100, 120):
        ws[f"j{i:03d}"] = job(f"j{i:03d}", created_at=NOW + i)
    later = NOW + 5 * 3600
    order = queue_order(list(ws.values()), later, sched)
    assert [ws.position(j.id, later, sched) for j in order] == list(range(1, len(order) + 1))
