"""Exactly-once submission with real parts: create 429, lost replies, reconciliation, restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import Harness, emulator_config, open_harness, settings

from tuningd.core.model import LocalState
from tuningd.emulator import LostReplyMode, QuotaMode


async def _until_state(h: Harness, job_id: str, state: LocalState, limit_s: float = 600) -> None:
    async def reached() -> bool:
        return (await h.job(job_id)).state is state
    await h.run_until(reached, limit_s=limit_s)


def _found(h: Harness, result: str) -> float:
    return h.metric("tuningd_submit_reconciliations_total", result=result) or 0.0


async def test_create_429_requeues_lowers_the_limit_and_recovers(tmp_path: Path) -> None:
    """A create refused with 429 goes back to queued and drops the global limit to 1; all jobs
    still complete once each, and the limit is back to 2 after the successful creates."""
    emulator = emulator_config(quota_mode=QuotaMode.REJECT, max_concurrent=1, job_seconds=30)
    async with open_harness(tmp_path, emulator=emulator, engine=settings(max_active=2)) as h:
        first = await h.submit()
        h.clock.advance(1)
        second = await h.submit()
        h.clock.advance(1)
        third = await h.submit()
        await h.settle()

        assert h.requests("create", "429") == 1
        assert (await h.job(second.id)).state is LocalState.QUEUED
        assert any("create throttled (429)" in r for r in await h.history(second.id))
        assert h.metric("tuningd_active_limit", scope="global") == 1

        await h.run_until_ended(limit_s=1200)

        ids = [first.id, second.id, third.id]
        assert await h.states(*ids) == [LocalState.SUCCEEDED] * 3
        assert [len(h.remote_for(i)) for i in ids] == [1, 1, 1]
        assert h.emulator.state.max_active == 1
        await h.settle()  # the gauge is published when the engine plans
        assert h.metric("tuningd_active_limit", scope="global") == 2


@pytest.mark.parametrize("mode", [LostReplyMode.DROP, LostReplyMode.UNAVAILABLE])
async def test_lost_create_reply_is_reconciled_and_adopted(tmp_path: Path,
                                                           mode: LostReplyMode) -> None:
    """A create whose reply is lost is looked for by label at once (no wait: finding it is
    proof), adopted, and never created twice."""
    async with open_harness(tmp_path, engine=settings(initial_s=5)) as h:
        h.set_faults(lost_reply_rate=1.0, lost_reply_mode=mode)  # every create loses its reply
        job = await h.submit()
        await h.settle()

        adopted = await h.job(job.id)
        assert adopted.state is LocalState.PENDING
        (remote,) = h.remote_for(job.id)
        assert adopted.remote_id == remote.job_id
        assert h.requests("list") >= 1
        assert _found(h, "found") == 1
        history = await h.history(job.id)
        assert any("create outcome unknown" in r for r in history)
        assert any("reconciled, remote job adopted" in r for r in history)

        await h.run_until_ended(limit_s=300)
        assert (await h.job(job.id)).state is LocalState.SUCCEEDED
        assert h.requests("create") == 1


async def test_create_dropped_before_it_reaches_vertex_is_requeued_and_created_once(
        tmp_path: Path) -> None:
    """A create whose connection drops before Vertex sees it reconciles as absent, goes back to
    queued and is then created exactly once."""
    async with open_harness(tmp_path, engine=settings(initial_s=5)) as h:
        h.set_faults(drop_rates={"create": 1.0})
        job = await h.submit()
        await h.settle()
        assert (await h.job(job.id)).state is LocalState.SUBMITTING
        assert h.remote_jobs() == []

        h.set_faults()
        await h.run(15)

        assert _found(h, "absent") == 1
        history = await h.history(job.id)
        assert any("reconciled, no remote job exists; back to queue" in r for r in history)
        assert (await h.job(job.id)).attempts == 2
        await h.run_until_ended(limit_s=300)
        assert (await h.job(job.id)).state is LocalState.SUCCEEDED
        assert len(h.remote_for(job.id)) == 1
        assert h.requests("create", "200") == 1


async def test_failing_reconcile_list_keeps_the_job_submitting_and_never_recreates(
        tmp_path: Path) -> None:
    """While the reconcile list fails the job stays submitting and retries later; it is never
    created again, and is adopted once listing works."""
    async with open_harness(tmp_path, engine=settings(initial_s=5)) as h:
        h.set_faults(lost_reply_rate=1.0, lost_reply_mode=LostReplyMode.UNAVAILABLE,
                     error_rates={"list": 1.0})
        job = await h.submit()
        await h.settle()
        await h.run(120)

        assert (await h.job(job.id)).state is LocalState.SUBMITTING
        failed_lists = h.requests("list", "503")
        assert 2 <= failed_lists <= 20  # retried with backoff, not every second
        assert _found(h, "error") == failed_lists
        assert h.requests("create") == 1

        h.set_faults()
        await h.run_until_ended(limit_s=900)
        assert (await h.job(job.id)).state is LocalState.SUCCEEDED
        assert _found(h, "found") == 1
        assert h.requests("create") == 1
        assert len(h.remote_for(job.id)) == 1


async def test_restart_reconciles_submitting_and_polls_the_others_at_once(
        tmp_path: Path) -> None:
    """After a crash a new engine on the same database polls pending, running and cancelling
    jobs at once, reconciles the submitting one, and every job ends correctly and once."""
    emulator = emulator_config(pending_seconds=5, job_seconds=100, cancel_seconds=30)
    async with open_harness(tmp_path, emulator=emulator, engine=settings(max_active=4)) as h:
        running = await h.submit()
        await h.settle()
        cancelling = await h.submit()
        await h.settle()
        await _until_state(h, cancelling.id, LocalState.RUNNING)
        await h.engine.cancel(cancelling.id)
        await h.settle()
        pending = await h.submit()
        await h.settle()
        # The create's reply is lost and the reconcile lists fail until the crash.
        h.set_faults(lost_reply_rate=1.0, lost_reply_mode=LostReplyMode.DROP,
                     error_rates={"list": 1.0})
        submitting = await h.submit()
        await h.settle()
        await h.tick(1)
        assert await h.states(running.id, cancelling.id, pending.id, submitting.id) == [
            LocalState.RUNNING, LocalState.CANCELLING, LocalState.PENDING, LocalState.SUBMITTING]
        assert h.requests("cancel") == 1

        await h.crash_and_restart()
        h.set_faults()
        lists = h.requests("list")
        # At once: one list refreshes the three remote jobs, one reconciles the submitting
        # job, and one sweeps the place.
        assert await h.engine.step() == 3
        assert h.requests("list") == lists + 3
        assert (await h.job(submitting.id)).state is LocalState.PENDING
        assert _found(h, "found") == 1

        await h.run_until_ended(limit_s=600)
        assert await h.states(running.id, cancelling.id, pending.id, submitting.id) == [
            LocalState.SUCCEEDED, LocalState.CANCELLED, LocalState.SUCCEEDED,
            LocalState.SUCCEEDED]
        assert len(h.remote_jobs()) == 4
        assert h.requests("create") == 4
        assert h.requests("cancel") == 1
        counts = await h.store.count_by_state()
        for state, count in counts.items():
            assert h.metric("tuningd_jobs", state=state.value) == count
