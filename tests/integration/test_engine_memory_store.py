"""The engine on the in-memory store: the JobStore port is all it needs of a store."""

from __future__ import annotations

from pathlib import Path

from engine_harness import emulator_config, open_harness, settings

from tuningd.adapters.memory import MemoryStore
from tuningd.core.model import LocalState
from tuningd.emulator import LostReplyMode


async def test_jobs_run_to_the_end_within_limits_on_the_memory_store(tmp_path: Path) -> None:
    """Five jobs under a limit of two each run once to success; a cancel takes effect; the
    store's history and counts match what the engine did."""
    async with open_harness(tmp_path, engine=settings(max_active=2), store="memory") as h:
        assert isinstance(h.store, MemoryStore)
        jobs = []
        for _ in range(5):
            jobs.append(await h.submit())
            h.clock.advance(1)
        await h.settle()
        await h.engine.cancel(jobs[4].id)
        await h.run_until_ended(limit_s=1200)

        assert await h.states(*(j.id for j in jobs)) == [LocalState.SUCCEEDED] * 4 + [
            LocalState.CANCELLED]
        assert [len(h.remote_for(j.id)) for j in jobs] == [1, 1, 1, 1, 0]
        assert h.emulator.state.max_active <= 2
        assert (await h.history(jobs[0].id))[0] == "accepted"
        counts = await h.store.count_by_state()
        assert counts[LocalState.SUCCEEDED] == 4 and counts[LocalState.CANCELLED] == 1


async def test_a_new_engine_on_the_same_memory_store_reconciles_a_lost_create(
        tmp_path: Path) -> None:
    """A create whose reply was lost before the engine died is found by the next engine on the
    same store, adopted, and never created twice."""
    emulator = emulator_config(pending_seconds=5, job_seconds=60)
    async with open_harness(tmp_path, emulator=emulator, store="memory") as h:
        h.set_faults(lost_reply_rate=1.0, lost_reply_mode=LostReplyMode.DROP,
                     error_rates={"list": 1.0})
        job = await h.submit()
        await h.settle()
        await h.tick(1)
        assert (await h.job(job.id)).state is LocalState.SUBMITTING

        await h.crash_and_restart()
        h.set_faults()
        await h.run_until_ended(job.id, limit_s=600)

        assert (await h.job(job.id)).state is LocalState.SUCCEEDED
        assert h.requests("create") == 1 and len(h.remote_for(job.id)) == 1
