"""Engine scheduling against the emulator on a manual clock: limits, order, drain, request ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import (
    FLASH,
    LOCATION,
    PRO,
    PROJECT,
    emulator_config,
    open_harness,
    settings,
    spec,
)

from tuningd.core import errors, limits
from tuningd.core.model import LocalState

EU = "europe-west4"


async def test_global_limit_and_remote_quota_hold_and_every_job_runs_once(
        tmp_path: Path) -> None:
    """With max_active=2 and a remote quota of 2, at most 2 jobs are ever active on either side,
    all six succeed, and each local job has exactly one remote job."""
    async with open_harness(tmp_path, emulator=emulator_config(max_concurrent=2),
                            engine=settings(max_active=2)) as h:
        ids = [(await h.submit()).id for _ in range(6)]
        await h.run_until_ended(limit_s=1200)

        assert await h.states(*ids) == [LocalState.SUCCEEDED] * 6
        assert h.emulator.state.max_active == 2
        assert h.peak_active[limits.GLOBAL] == 2
        assert sorted(h.created_order()) == sorted(ids)
        for job_id in ids:
            (remote,) = h.remote_for(job_id)
            assert (await h.job(job_id)).remote_id == remote.job_id
        assert h.requests("create") == 6


async def test_per_location_and_per_base_model_limits_hold(tmp_path: Path) -> None:
    """Per-location and per-base-model caps bound their scopes while the global cap has room."""
    engine = settings(max_active=10, per_location={LOCATION: 1}, per_base_model={PRO: 1})
    async with open_harness(tmp_path, emulator=emulator_config(), engine=engine) as h:
        ids = [
            *[(await h.submit(location=LOCATION, base_model=FLASH)).id for _ in range(3)],
            *[(await h.submit(location=EU, base_model=PRO)).id for _ in range(3)],
            *[(await h.submit(location=EU, base_model=FLASH)).id for _ in range(2)],
        ]
        await h.run_until_ended(limit_s=1200)

        assert await h.states(*ids) == [LocalState.SUCCEEDED] * len(ids)
        location = limits.Scope(limits.ScopeKind.LOCATION, LOCATION)
        pro = limits.Scope(limits.ScopeKind.BASE_MODEL, PRO)
        assert h.peak_active[location] == 1
        assert h.peak_active[pro] == 1
        # The unlimited scopes really ran in parallel, so the caps above were binding.
        assert h.peak_active[limits.Scope(limits.ScopeKind.LOCATION, EU)] >= 2
        assert len(h.remote_jobs()) == len(ids)


async def test_higher_priority_first_then_oldest_first(tmp_path: Path) -> None:
    """With one slot, jobs are created by priority, and among equal priority oldest first."""
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=20),
                            engine=settings(max_active=1)) as h:
        low = await h.submit(priority=0)
        h.clock.advance(1)
        high_old = await h.submit(priority=5)
        h.clock.advance(1)
        high_new = await h.submit(priority=5)
        h.clock.advance(1)
        mid = await h.submit(priority=2)
        await h.run_until_ended(limit_s=600)

        assert h.created_order() == [high_old.id, high_new.id, mid.id, low.id]


async def test_aging_lets_an_old_low_priority_job_overtake(tmp_path: Path) -> None:
    """A low-priority job that waited long enough is submitted before a newer higher one."""
    engine = settings(max_active=1, aging_s=10)
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=100),
                            engine=engine) as h:
        blocker = await h.submit(priority=10)
        await h.settle()
        old_low = await h.submit(priority=0)
        await h.run(50)
        new_high = await h.submit(priority=3)
        await h.run_until_ended(limit_s=1200)

        # When the slot freed (~105 s), old_low had aged by ~10 points, new_high by ~5.
        assert h.created_order() == [blocker.id, old_low.id, new_high.id]


async def test_draining_refuses_submits_and_creates_nothing_but_still_polls(
        tmp_path: Path) -> None:
    """Once draining, submit raises Unavailable and queued jobs are not created (polls go on)."""
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=30),
                            engine=settings(max_active=1)) as h:
        running = await h.submit()
        h.clock.advance(1)
        queued = await h.submit()
        await h.settle()
        await h.engine.drain(grace_s=1.0)

        with pytest.raises(errors.Unavailable):
            await h.submit()
        await h.run_until_ended(running.id, limit_s=300)
        await h.run(60)

        assert (await h.job(running.id)).state is LocalState.SUCCEEDED
        assert (await h.job(queued.id)).state is LocalState.QUEUED
        assert h.requests("create") == 1
        assert not h.engine.ready()


async def test_request_id_makes_submit_idempotent(tmp_path: Path) -> None:
    """Submitting twice with one request id returns the same job (created False) and runs once."""
    async with open_harness(tmp_path, emulator=emulator_config()) as h:
        first, created_first = await h.engine.submit(PROJECT, LOCATION, spec(),
                                                     request_id="req-1")
        h.clock.advance(3)
        second, created_second = await h.engine.submit(PROJECT, LOCATION, spec(),
                                                       request_id="req-1")

        assert created_first and not created_second
        assert second.id == first.id
        await h.run_until_ended(limit_s=300)
        assert sum((await h.store.count_by_state()).values()) == 1
        assert len(h.remote_jobs()) == 1


async def test_queue_positions_follow_priority_then_age_and_new_jobs_place_without_resort(
        tmp_path: Path) -> None:
    """Queued jobs report their submission order (priority, then age); a job created after the
    last sort is placed behind every job of equal or higher priority, and a later sort agrees."""
    async with open_harness(tmp_path, emulator=emulator_config(max_concurrent=1),
                            engine=settings(max_active=1)) as h:
        running = await h.submit()
        await h.settle()
        low = await h.submit(priority=0)
        high = await h.submit(priority=5)
        assert h.engine.queue_position(await h.job(running.id)) is None
        assert h.engine.queue_position(await h.job(high.id)) == 1
        assert h.engine.queue_position(await h.job(low.id)) == 2
        # Within the once-a-second window no re-sort happens; the new job is still exact here.
        mid = await h.submit(priority=3)
        assert h.engine.queue_position(await h.job(mid.id)) == 2
        h.clock.advance(2.0)
        positions = [h.engine.queue_position(await h.job(j.id)) for j in (high, mid, low)]
        assert positions == [1, 2, 3]
