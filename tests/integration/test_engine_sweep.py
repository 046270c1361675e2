"""Engine with real parts: the sweep adopts, cancels or reports remote jobs no tracked job owns."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine_harness import LOCATION, PROJECT, open_harness, settings

from tuningd.core.model import JobState, LocalState


async def test_sweep_cancels_a_late_landing_of_a_job_cancelled_before_creation(
        tmp_path: Path) -> None:
    """A remote job that lands for a job cancelled before its creation is cancelled by the next
    sweep with max_active = 1 (no batch polling needed), counted and logged (breakage 2)."""
    async with open_harness(tmp_path, engine=settings(max_active=1, sweep_interval_s=60),
                            expect_unowned=True) as h:
        job = await h.submit()
        await h.engine.cancel(job.id)
        late = h.plant_remote(job.id)
        await h.run(61)

        assert late.state in (JobState.JOB_STATE_CANCELLING, JobState.JOB_STATE_CANCELLED)
        assert (await h.job(job.id)).state is LocalState.CANCELLED
        assert h.metric("tuningd_sweep_findings_total", kind="late") == 1
        assert h.metric("tuningd_sweep_cancels_total", result="sent") == 1
        (event,) = h.events("sweep.unowned_remote_job")
        assert (event["finding"], event["job_id"]) == ("late", job.id)


async def test_sweep_cancels_a_duplicate_and_keeps_the_tracked_job(tmp_path: Path) -> None:
    """A second remote job for a running job is cancelled; the tracked one runs on to success."""
    async with open_harness(tmp_path, engine=settings(max_active=1, sweep_interval_s=60),
                            expect_unowned=True) as h:
        job = await h.submit()
        await h.settle()
        duplicate = h.plant_remote(job.id)
        await h.run(61)

        assert duplicate.state in (JobState.JOB_STATE_CANCELLING, JobState.JOB_STATE_CANCELLED)
        assert h.metric("tuningd_sweep_findings_total", kind="duplicate") == 1
        await h.run_until_ended(job.id)
        done = await h.job(job.id)
        assert done.state is LocalState.SUCCEEDED and done.remote_id != duplicate.job_id
        await h.run(61)  # the next sweep sees nothing unowned any more
        assert h.metric("tuningd_unowned_remote_jobs", project=PROJECT, location=LOCATION) == 0


async def test_sweep_only_reports_a_job_no_local_job_knows(tmp_path: Path) -> None:
    """A managed-by=tuningd job whose tuningd-job-id no local job has may be another daemon's:
    it is reported once (metric, gauge, one log line) and never cancelled."""
    async with open_harness(tmp_path, engine=settings(sweep_interval_s=60),
                            expect_unowned=True) as h:
        await h.submit()
        await h.settle()
        stranger = h.plant_remote("0a0b0c0d-not-ours")
        await h.run(61)
        assert h.metric("tuningd_unowned_remote_jobs", project=PROJECT, location=LOCATION) == 1
        await h.run(200)

        assert stranger.cancel_s is None and stranger.state is JobState.JOB_STATE_SUCCEEDED
        assert h.metric("tuningd_sweep_findings_total", kind="unknown") == 1
        assert len(h.events("sweep.unowned_remote_job")) == 1
        assert h.metric("tuningd_unowned_remote_jobs", project=PROJECT, location=LOCATION) == 0


async def test_configured_places_are_swept_after_the_database_was_lost(tmp_path: Path) -> None:
    """With sweep_places set (from the allow-lists), a daemon whose database lost every job still
    finds the managed job running on Vertex at start and reports it (breakage 6)."""
    engine = dataclasses.replace(settings(sweep_interval_s=300),
                                 sweep_places=((PROJECT, LOCATION),))
    async with open_harness(tmp_path, engine=engine, expect_unowned=True) as h:
        job = await h.submit()
        await h.settle()
        (remote,) = h.remote_for(job.id)
        assert h.events("sweep.unowned_remote_job") == []

        h.db_path = tmp_path / "restored-from-nothing.db"
        await h.crash_and_restart()
        await h.settle()

        assert await h.store.get(job.id) is None
        assert h.metric("tuningd_sweep_findings_total", kind="unknown") == 1
        assert h.metric("tuningd_unowned_remote_jobs", project=PROJECT, location=LOCATION) == 1
        (event,) = h.events("sweep.unowned_remote_job")
        assert event["remote_name"].endswith(remote.job_id)
        assert remote.cancel_s is None


async def test_a_poll_list_is_a_sweep_so_no_separate_sweep_read_is_made(tmp_path: Path) -> None:
    """With the sweep interval far away, the poll lists of a place's running jobs still find
    and cancel a duplicate (they ask for every active job of tuningd's), and no read is made
    for a sweep of its own."""
    async with open_harness(tmp_path, engine=settings(max_active=2, sweep_interval_s=100_000),
                            expect_unowned=True) as h:
        first, second = await h.submit(), await h.submit()
        await h.settle()
        duplicate = h.plant_remote(first.id)
        sweeps_before = h.metric("tuningd_last_sweep_timestamp_seconds")
        await h.run(60)

        assert duplicate.state in (JobState.JOB_STATE_CANCELLING, JobState.JOB_STATE_CANCELLED)
        assert h.metric("tuningd_sweep_findings_total", kind="duplicate") == 1
        assert h.metric("tuningd_last_sweep_timestamp_seconds") > (sweeps_before or 0)
        await h.run_until_ended(first.id, second.id)
        assert (await h.job(first.id)).state is LocalState.SUCCEEDED
