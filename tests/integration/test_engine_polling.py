"""Engine polling against the emulator on a manual clock: batching, intervals, errors, metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import LOCATION, Harness, emulator_config, open_harness, settings

from tuningd.core.errors import Code
from tuningd.core.model import LocalState, Outcome


async def _until_state(h: Harness, job_id: str, state: LocalState, limit_s: float = 600) -> None:
    async def reached() -> bool:
        return (await h.job(job_id)).state is state
    await h.run_until(reached, limit_s=limit_s)


async def test_one_list_call_per_round_and_no_get_for_jobs_that_end(tmp_path: Path) -> None:
    """Active jobs of a location are refreshed by one list call per round, and a job that
    ended is seen in that list (it asks for jobs created since the oldest one polled): no GET."""
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=120),
                            engine=settings(max_active=3)) as h:
        ids = [(await h.submit()).id for _ in range(3)]
        await h.settle()
        assert len({j.create_s for j in h.remote_jobs()}) == 1  # they all end together

        polled_rounds = 0
        while not all(s.is_terminal for s in await h.states(*ids)):
            before = h.reads()
            await h.tick(1)
            after = h.reads()
            new_lists = after["list"] - before["list"]
            assert new_lists <= 1
            polled_rounds += new_lists

        assert await h.states(*ids) == [LocalState.SUCCEEDED] * 3
        assert h.reads() == {"get": 0, "list": polled_rounds}
        assert polled_rounds >= 3


async def test_poll_interval_grows_while_quiet_and_resets_after_a_change(tmp_path: Path) -> None:
    """During a long quiet phase reads per job stay far below one per initial interval; the
    interval reaches its maximum and falls back to the initial one when the job changes."""
    initial, maximum = 5.0, 300.0
    quiet_s = 1990.0
    async with open_harness(tmp_path,
                            emulator=emulator_config(pending_seconds=2000, job_seconds=20000),
                            engine=settings(initial_s=initial, max_interval_s=maximum)) as h:
        ids = [(await h.submit()).id for _ in range(2)]
        await h.settle()
        await h.run(quiet_s, every=5)

        reads = h.reads()
        reads_per_job = reads["list"] + reads["get"]  # one list reads every job of the location
        baseline = quiet_s / initial  # a GET per job every initial interval
        assert baseline / reads_per_job >= 20, reads
        assert [(await h.job(i)).poll_interval_s for i in ids] == [maximum, maximum]
        assert await h.states(*ids) == [LocalState.PENDING] * 2

        await _until_state(h, ids[0], LocalState.RUNNING, limit_s=maximum * 1.2)
        assert (await h.job(ids[0])).poll_interval_s == initial
        lists_at_change = h.requests("list")
        await h.run(4 * initial)
        assert h.requests("list") - lists_at_change >= 2


async def test_v1beta1_progress_counters_do_not_reset_the_interval(tmp_path: Path) -> None:
    """With v1beta1, tuning progress (tuningJobMetadata) alone neither resets the poll interval
    nor writes history: reads and history match the v1 run of the same jobs."""
    outcomes = {}
    for version in ("v1", "v1beta1"):
        async with open_harness(tmp_path / version, emulator=emulator_config(job_seconds=10000),
                                engine=settings(), api_version=version) as h:
            ids = [(await h.submit()).id for _ in range(2)]
            await h.settle()
            await h.run(5000, every=10)
            job = await h.job(ids[0])
            assert job.remote_substate == ("TUNING_JOB_STATE_TUNING" if version == "v1beta1"
                                           else None)
            outcomes[version] = (h.reads(), len(await h.history(ids[0])))

    reads, rows = outcomes["v1beta1"]
    assert reads == outcomes["v1"][0]
    assert rows == outcomes["v1"][1]


@pytest.mark.parametrize(("method", "jobs"), [("get", 1), ("list", 2)])
async def test_transient_read_errors_back_off_and_never_change_state(
        tmp_path: Path, method: str, jobs: int) -> None:
    """503s on polls leave the job's state and history alone and are retried with growing
    backoff; once the errors stop the job is followed to its end."""
    quiet_s = 600.0
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=2000),
                            engine=settings(initial_s=5)) as h:
        ids = [(await h.submit()).id for _ in range(jobs)]
        await h.settle()
        for job_id in ids:
            await _until_state(h, job_id, LocalState.RUNNING)
        histories = [await h.history(i) for i in ids]
        answered = h.requests(method, "200")

        h.set_faults(error_rates={method: 1.0})
        await h.run(quiet_s)

        failed = h.requests(method, "503")
        assert 3 <= failed <= quiet_s / 5 / 4, failed  # a fixed 5 s poll would make 120
        assert h.requests(method, "200") == answered
        for job_id, history in zip(ids, histories, strict=True):
            job = await h.job(job_id)
            assert job.state is LocalState.RUNNING
            assert job.retry_count >= 3
            assert await h.history(job_id) == history

        h.set_faults()
        await h.run_until_ended(every=5, limit_s=3000)
        for job_id in ids:
            job = await h.job(job_id)
            assert (job.state, job.retry_count) == (LocalState.SUCCEEDED, 0)


async def test_429_on_get_slows_the_request_budget(tmp_path: Path) -> None:
    """A 429 on a poll slows the location's request budget and changes nothing else."""
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=600),
                            engine=settings()) as h:
        job = await h.submit()
        await h.settle()
        await _until_state(h, job.id, LocalState.RUNNING)
        budget = h.engine._capacity.budgets.location(LOCATION, h.clock.now())
        assert budget.requests.rate_fraction == 1.0

        h.set_faults(error_rates={"get": 1.0}, error_statuses={"get": 429})
        await h.run(30)

        assert h.requests("get", "429") >= 1
        assert budget.requests.rate_fraction < 1.0
        assert (await h.job(job.id)).state is LocalState.RUNNING


@pytest.mark.parametrize("jobs", [1, 2])
async def test_remote_job_that_vanished_fails_as_remote_lost(tmp_path: Path, jobs: int) -> None:
    """A remote job that is gone (emulator reset between polls) ends failed, remote_lost, but
    only after a second 404 and a label list that agrees (one 404 is not believed)."""
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=600)) as h:
        ids = [(await h.submit()).id for _ in range(jobs)]
        await h.settle()
        for job_id in ids:
            await _until_state(h, job_id, LocalState.RUNNING)

        h.emulator.state.reset()
        await h.run_until_ended(limit_s=600)

        for job_id in ids:
            job = await h.job(job_id)
            assert (job.state, job.outcome) == (LocalState.FAILED, Outcome.REMOTE_LOST)
            assert job.error_code == int(Code.NOT_FOUND)
            history = await h.history(job_id)
            assert any("answered 404; confirming" in r for r in history)
        assert h.requests("get", "404") == 2 * jobs
        assert h.requests("create") == 0  # counters were reset too: nothing was recreated


async def test_metrics_match_the_store_after_a_run(tmp_path: Path) -> None:
    """After a mixed run, job gauges equal the store's counts and the duration, detection and
    poll metrics were recorded."""
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=60),
                            engine=settings(max_active=2)) as h:
        start = h.clock.now()
        ok = await h.submit()
        h.clock.advance(1)
        stopped = await h.submit()
        h.clock.advance(1)
        never_sent = await h.submit()
        h.clock.advance(1)
        rejected = await h.submit(base_model="no-such-model")
        await h.engine.cancel(never_sent.id)
        await h.settle()
        await _until_state(h, stopped.id, LocalState.RUNNING)
        await h.engine.cancel(stopped.id)
        await h.run_until_ended(limit_s=600)

        counts = await h.store.count_by_state()
        assert [(await h.job(j.id)).state for j in (ok, stopped, never_sent, rejected)] == [
            LocalState.SUCCEEDED, LocalState.CANCELLED, LocalState.CANCELLED, LocalState.FAILED]
        for state, count in counts.items():
            assert h.metric("tuningd_jobs", state=state.value) == count, state
        assert h.metric("tuningd_job_queue_wait_seconds_count") == 2
        assert h.metric("tuningd_job_duration_seconds_count", state="succeeded") == 1
        assert h.metric("tuningd_job_duration_seconds_count", state="cancelled") == 2
        assert h.metric("tuningd_job_duration_seconds_count", state="failed") == 1
        assert h.metric("tuningd_job_run_duration_seconds_count", state="succeeded") == 1
        assert h.metric("tuningd_job_run_duration_seconds_sum", state="succeeded") == 60
        assert h.metric("tuningd_job_run_duration_seconds_count", state="cancelled") == 1
        detected = h.metric("tuningd_job_detection_delay_seconds_count")
        assert detected is not None and detected >= 3
        last_poll = h.metric("tuningd_last_successful_poll_timestamp_seconds")
        assert last_poll is not None and start < last_poll <= h.clock.now()
        assert h.metric("tuningd_submit_reconciliations_total", result="found") == 0


async def test_jobs_held_by_the_create_bucket_sleep_until_it_refills(tmp_path: Path) -> None:
    """When only the create bucket is empty the loop sleeps until it (or the tick) comes
    round, not the request bucket's 50 ms: a queue over its create budget costs no rounds."""
    import dataclasses

    from tuningd.core.budget import BudgetSettings

    engine = dataclasses.replace(settings(max_active=10),
                                 budget=BudgetSettings(creates_per_minute=6.0, burst_s=10.0))
    async with open_harness(tmp_path, emulator=emulator_config(), engine=engine) as h:
        for _ in range(4):
            await h.submit()
        assert await h.engine.step() == 1  # the one create token the bucket holds
        delay = h.engine._iterate()
        assert delay == pytest.approx(h.engine.settings.tick_s)
