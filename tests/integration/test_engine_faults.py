"""Engine with real parts under the faults real Vertex has (issue 7): nothing wedges or is lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import LOCATION, PROJECT, emulator_config, open_harness, settings, spec
from sqlite_faults import read_only

from tuningd.core.limits import GLOBAL
from tuningd.core.model import LocalState, Outcome
from tuningd.emulator import ErrorRule
from tuningd.http.api import job_view


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


# --- a create that lands late, a list that lags (breakage 1) ---------------------------------

SHIPPED_RECONCILE = {"request_timeout_s": 60.0, "list_lag_s": 60.0, "absent_confirmations": 3,
                     "confirm_spacing_s": 60.0}


async def test_a_create_landing_90_s_late_behind_a_30_s_list_lag_is_adopted_not_repeated(
        tmp_path: Path) -> None:
    """With the shipped reconcile settings, a create whose POST fails and whose job lands 90 s
    later, seen by a list lagging 30 s, is waited for and adopted: one remote job (breakage 1)."""
    async with open_harness(tmp_path, engine=settings(max_active=1, **SHIPPED_RECONCILE)) as h:
        h.set_faults(late_create_rate=1.0, late_create_delay_s=90.0, list_lag_s=30.0)
        job = await h.submit()
        await h.settle()
        assert h.emulator.state.pending_creates
        h.set_faults(list_lag_s=30.0)  # a second create would succeed at once
        await h.run(400, every=5)

        (remote,) = h.remote_for(job.id)
        adopted = await h.job(job.id)
        assert adopted.remote_id == remote.job_id and adopted.attempts == 1
        history = await h.history(job.id)
        assert any("create outcome unknown" in r for r in history)
        assert any("remote job adopted" in r for r in history)
        # Landed at 90 s, listed from 120 s: it was waited for, never presumed absent.
        assert not any("no remote job exists" in r for r in history)
        await h.run_until_ended(job.id, every=5)
        assert (await h.job(job.id)).state is LocalState.SUCCEEDED
        assert h.requests("create") == 1


async def test_a_create_landing_beyond_the_window_is_cancelled_by_the_sweep(
        tmp_path: Path) -> None:
    """A create that lands after it was presumed absent (later than the settings allow for) is
    a duplicate: the sweep cancels it and the job runs on its second remote job."""
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=1000),
                            engine=settings(max_active=1, sweep_interval_s=60,
                                            **SHIPPED_RECONCILE),
                            expect_unowned=True) as h:
        h.set_faults(late_create_rate=1.0, late_create_delay_s=600.0)
        job = await h.submit()
        await h.settle()
        h.set_faults()
        await h.run(700, every=5)

        tracked_id = (await h.job(job.id)).remote_id
        (tracked,) = [r for r in h.remote_for(job.id) if r.job_id == tracked_id]
        (late,) = [r for r in h.remote_for(job.id) if r.job_id != tracked_id]
        assert late.cancel_s is not None and tracked.cancel_s is None
        assert late.create_s > tracked.create_s  # it landed after the job was made again
        assert h.metric("tuningd_sweep_findings_total", kind="duplicate") == 1
        await h.run_until_ended(job.id, every=5)
        assert (await h.job(job.id)).state is LocalState.SUCCEEDED


# --- project-wide errors pause creates instead of failing the queue (breakage 4) -------------

@pytest.mark.parametrize("rule", [
    ErrorRule(403, method="create"),
    ErrorRule(403, method="create", reason="SERVICE_DISABLED"),
    ErrorRule(403, method="create", reason="BILLING_DISABLED"),
    ErrorRule(404, method="create"),
    ErrorRule(400, method="create", status_name="FAILED_PRECONDITION"),
    ErrorRule(401, method="*"),
], ids=["iam", "api-disabled", "billing", "404", "failed-precondition", "401"])
async def test_a_project_wide_error_on_create_pauses_creates_and_keeps_the_queue(
        tmp_path: Path, rule: ErrorRule) -> None:
    """For 10 minutes every create is refused for the whole project: no queued job fails, creates
    pause (a few probes with backoff), the pause shows in metrics, and all jobs run after."""
    async with open_harness(tmp_path, engine=settings(max_active=2)) as h:
        ids = []
        for _ in range(5):
            ids.append((await h.submit()).id)
            h.clock.advance(1)
        h.set_faults(error_rules=(rule,))
        await h.run(600, every=5)

        assert await h.states(*ids) == [LocalState.QUEUED] * 5
        assert h.remote_jobs() == []
        assert h.metric("tuningd_creates_paused", project=PROJECT, location=LOCATION) == 1
        # The first refusal, then probes after ~30, 60, 120, 240 s (jittered).
        assert 2 <= len(h.events("creates.paused")) <= 7
        (first, *_) = h.events("creates.paused")
        assert first["status"] == rule.effective_status_name
        assert any("creates paused" in r for r in await h.history(ids[0]))

        h.set_faults()
        await h.run_until_ended(*ids, every=5, limit_s=3600)
        assert await h.states(*ids) == [LocalState.SUCCEEDED] * 5
        assert h.metric("tuningd_creates_paused", project=PROJECT, location=LOCATION) == 0
        assert len(h.events("creates.resumed")) == 1


async def test_a_job_level_400_still_fails_only_that_job(tmp_path: Path) -> None:
    """A 400 INVALID_ARGUMENT is about the job's own body: that job fails, creates go on."""
    async with open_harness(tmp_path, engine=settings(max_active=1)) as h:
        h.set_faults(error_rules=(ErrorRule(400, method="create", rate=1.0),))
        bad = await h.submit()
        await h.settle()
        h.set_faults()
        h.clock.advance(1)
        good = await h.submit()
        await h.run_until_ended(good.id)
        assert (await h.job(bad.id)).outcome is Outcome.REJECTED
        assert (await h.job(good.id)).state is LocalState.SUCCEEDED
        assert h.events("creates.paused") == []


# --- a 404 is confirmed before a job is called lost (breakage 4) -----------------------------

async def test_one_404_on_a_get_does_not_lose_a_running_job(tmp_path: Path) -> None:
    """A single 404 answer to a GET (a proxy hiccup) is rechecked; the job runs on to success
    and its slot is never freed early."""
    async with open_harness(tmp_path, engine=settings(max_active=1)) as h:
        job = await h.submit()
        h.clock.advance(1)
        waiting = await h.submit()
        await h.run(10)
        h.set_faults(error_rules=(ErrorRule(404, method="get"),))
        await h.run_until(lambda: _true(h.requests("get", "404") == 1))
        h.set_faults()
        await h.run_until_ended(job.id)

        assert (await h.job(job.id)).state is LocalState.SUCCEEDED
        assert any("answered 404; confirming" in r for r in await h.history(job.id))
        assert len(h.remote_for(waiting.id)) <= 1
        assert h.peak_active[GLOBAL] == 1


@pytest.mark.parametrize("methods", [("get",), ("get", "list")], ids=["get-only", "get-and-list"])
async def test_an_endpoint_that_answers_404_never_declares_jobs_lost(
        tmp_path: Path, methods: tuple[str, ...]) -> None:
    """A misconfigured proxy answering 404 to every GET (and maybe every list) for 10 minutes
    never turns running jobs into `failed` nor frees their slots for more creates."""
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=3000),
                            engine=settings(max_active=1)) as h:
        job = await h.submit()
        h.clock.advance(1)
        queued = await h.submit()
        await h.run(10)
        h.set_faults(error_rules=tuple(ErrorRule(404, method=m) for m in methods))
        await h.run(600, every=5)

        assert (await h.job(job.id)).state is LocalState.RUNNING
        assert (await h.job(queued.id)).state is LocalState.QUEUED
        assert h.requests("create") == 1


async def _true(value: bool) -> bool:
    return value


async def test_the_api_shows_why_a_queued_job_waits_while_creates_are_paused(
        tmp_path: Path) -> None:
    """While creates are paused, a queued job's view says so: status, message, next probe."""
    async with open_harness(tmp_path, engine=settings(max_active=1)) as h:
        job = await h.submit()
        h.set_faults(error_rules=(ErrorRule(403, method="create", reason="SERVICE_DISABLED"),))
        await h.settle()
        view = job_view(await h.job(job.id), pause=h.engine.pause_for(await h.job(job.id)))
        paused = view["tuningd"]["createsPaused"]
        assert paused["status"] == "PERMISSION_DENIED"
        assert "has not been used in project" in paused["message"]
        assert paused["nextProbeTime"] > paused["since"]
        h.set_faults()
        await h.run(120)
        assert h.engine.pause_for(await h.job(job.id)) is None


async def test_a_garbled_create_reply_is_an_unknown_outcome_and_the_job_is_adopted(
        tmp_path: Path) -> None:
    """A 200 whose body is an HTML page or cut in half may hide a created job: it is looked up
    by label and adopted, never created again."""
    async with open_harness(tmp_path) as h:
        h.set_faults(malformed_rates={"create": 1.0})
        html = await h.submit()
        await h.settle()
        h.set_faults(truncated_rates={"create": 1.0})
        cut = await h.submit()
        await h.settle()
        h.set_faults()
        for job_id in (html.id, cut.id):
            (remote,) = h.remote_for(job_id)
            assert (await h.job(job_id)).remote_id == remote.job_id
        assert h.requests("create") == 2
        assert h.metric("tuningd_unknown_create_outcomes_total") == 2


async def test_a_create_that_never_left_goes_back_to_the_queue_without_a_reconcile(
        tmp_path: Path) -> None:
    """When Vertex cannot be reached at all (connection refused), nothing was sent: the job is
    queued again with backoff, not reconciled, and is created once Vertex answers."""
    async with open_harness(tmp_path) as h:
        port = h.emulator.port
        await h.emulator.stop()
        job = await h.submit()
        await h.settle()
        queued = await h.job(job.id)
        assert queued.state is LocalState.QUEUED and queued.attempts == 1
        assert any("create not made" in r for r in await h.history(job.id))
        await h.emulator.start(port=port)
        await h.run_until_ended(job.id)
        assert (await h.job(job.id)).state is LocalState.SUCCEEDED
        assert h.requests("list") <= 1  # at most the sweep; no reconcile was needed


async def test_a_reload_probes_paused_places_at_once(tmp_path: Path) -> None:
    """After the operator fixes the cause and reloads (SIGHUP), creates resume at the next round
    instead of after the probe backoff."""
    async with open_harness(tmp_path, engine=settings(max_active=1)) as h:
        job = await h.submit()
        h.set_faults(error_rules=(ErrorRule(403, method="create"),))
        await h.run(300, every=5)  # the probe backoff has grown past a minute
        assert (await h.job(job.id)).state is LocalState.QUEUED
        h.set_faults()
        h.engine.reload(h.settings)
        await h.settle()
        assert (await h.job(job.id)).state is LocalState.PENDING
        assert len(h.events("creates.resumed")) == 1
