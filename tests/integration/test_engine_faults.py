"""Engine with real parts under the faults real Vertex has (issue 7): nothing wedges or is lost."""

from __future__ import annotations

from pathlib import Path

from engine_harness import PROJECT, open_harness, settings, spec
from sqlite_faults import read_only

from tuningd.model import LocalState, Outcome


async def test_a_job_for_an_invalid_location_fails_with_its_reason_and_frees_the_slot(
        tmp_path: Path) -> None:
    """A job whose location is no resource id (an old database, an API that let it through)
    fails with its reason instead of holding the only slot in `submitting` forever; the next
    job runs (breakage 5)."""
    async with open_harness(tmp_path, engine=settings(max_active=1)) as h:
        bad, _ = await h.engine.submit(PROJECT, "US-Central1", spec())
        h.clock.advance(1)  # the bad job is first in line
        good = await h.submit()
        await h.settle()

        failed = await h.job(bad.id)
        assert (failed.state, failed.outcome) == (LocalState.FAILED, Outcome.REJECTED)
        assert "location ID is not valid" in (failed.error_message or "")
        assert h.emulator.state.request_counts.get("create", {}) == {"200": 1}
        await h.run_until_ended(good.id)
        assert (await h.job(good.id)).state is LocalState.SUCCEEDED


async def test_a_submitting_job_for_an_invalid_location_reconciles_as_absent(
        tmp_path: Path) -> None:
    """A job left `submitting` for an invalid location (by an older tuningd) is presumed absent
    (nothing can exist under such a parent), and a cancel asked meanwhile takes effect."""
    async with open_harness(tmp_path, engine=settings(max_active=1)) as h:
        bad, _ = await h.engine.submit(PROJECT, "us%2Fcentral1", spec())
        stuck = bad.evolve(state=LocalState.SUBMITTING, attempts=1, submit_started_at=0.0,
                           attempt_ended_at=0.0, updated_at=bad.updated_at + 1)
        await h.store.apply(bad, stuck, "create attempt 1 started (older tuningd)")
        await h.crash_and_restart()
        await h.engine.cancel(bad.id)
        await h.run(30)

        done = await h.job(bad.id)
        assert (done.state, done.outcome) == (LocalState.CANCELLED, Outcome.CANCELLED_LOCALLY)
        assert h.emulator.state.request_counts == {}


async def test_a_read_only_store_backs_the_engine_off_and_leaves_a_history_note(
        tmp_path: Path) -> None:
    """While the database refuses writes, a due job is retried with backoff (no hot loop, no
    POST without its stored intent, one log line per failure); once writes work again the job
    is created and its history tells of the failures (breakage 7)."""
    async with open_harness(tmp_path, engine=settings(max_active=1)) as h:
        job = await h.submit()
        await read_only(h.store)
        await h.run(120)

        failures = h.events("store.failed")
        assert 1 <= len(failures) <= 12
        assert all(e["operation"] == "submit" for e in failures)
        assert h.requests("create") == 0
        assert h.metric("tuningd_store_errors_total", operation="write") == len(failures)
        assert h.events("engine.action_failed") == []

        await read_only(h.store, on=False)
        await h.run_until_ended(job.id)
        done = await h.job(job.id)
        assert done.state is LocalState.SUCCEEDED
        history = await h.history(job.id)
        assert any(r.startswith("store error during submit") for r in history)
        assert h.requests("create") == 1
