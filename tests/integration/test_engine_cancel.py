"""Cancellation through the Engine with real parts, from every local state."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import Harness, emulator_config, open_harness, settings

from tuningd.core import errors
from tuningd.core.model import JobState, LocalState, Outcome
from tuningd.emulator import LostReplyMode


async def _until_state(h: Harness, job_id: str, state: LocalState, limit_s: float = 600) -> None:
    async def reached() -> bool:
        return (await h.job(job_id)).state is state
    await h.run_until(reached, limit_s=limit_s)


async def test_cancel_queued_job_makes_no_remote_call(tmp_path: Path) -> None:
    """A queued job is cancelled at once, locally, and Vertex never hears of it."""
    async with open_harness(tmp_path) as h:
        job = await h.submit()
        cancelled = await h.engine.cancel(job.id)
        await h.run(30)

        assert (cancelled.state, cancelled.outcome) == (LocalState.CANCELLED,
                                                        Outcome.CANCELLED_LOCALLY)
        assert (await h.job(job.id)).state is LocalState.CANCELLED
        assert h.emulator.state.request_counts == {}


async def test_cancel_while_submitting_is_sent_once_the_create_resolves(tmp_path: Path) -> None:
    """A cancel of a submitting job is kept as an intent and sent once reconciliation finds the
    remote job; the job ends cancelled."""
    async with open_harness(tmp_path, engine=settings(initial_s=5)) as h:
        # The reply is lost and the lists that would find the job fail for now.
        h.set_faults(lost_reply_rate=1.0, lost_reply_mode=LostReplyMode.UNAVAILABLE,
                     error_rates={"list": 1.0})
        job = await h.submit()
        await h.settle()
        intent = await h.engine.cancel(job.id)
        await h.settle()

        assert (intent.state, intent.cancel_requested) == (LocalState.SUBMITTING, True)
        assert h.requests("cancel") == 0
        h.set_faults()

        await h.run_until_ended(limit_s=300)
        done = await h.job(job.id)
        assert done.state is LocalState.CANCELLED
        assert h.requests("cancel") == 1
        (remote,) = h.remote_for(job.id)
        assert remote.state is JobState.JOB_STATE_CANCELLED
        assert h.requests("create") == 1


@pytest.mark.parametrize("state", [LocalState.PENDING, LocalState.RUNNING])
async def test_cancel_remote_job_goes_cancelling_then_cancelled(tmp_path: Path,
                                                                state: LocalState) -> None:
    """A pending or running job goes cancelling, the cancel is sent once, and it ends
    cancelled when Vertex says so."""
    async with open_harness(tmp_path, emulator=emulator_config(cancel_seconds=20)) as h:
        job = await h.submit()
        await h.settle()
        await _until_state(h, job.id, state)

        cancelling = await h.engine.cancel(job.id)
        assert cancelling.state is LocalState.CANCELLING
        await h.settle()
        assert h.requests("cancel", "200") == 1
        assert h.remote_for(job.id)[0].state is JobState.JOB_STATE_CANCELLING

        await h.run_until_ended(limit_s=300)
        done = await h.job(job.id)
        assert (done.state, done.outcome) == (LocalState.CANCELLED, Outcome.NORMAL)
        assert h.requests("cancel") == 1


async def test_second_cancel_of_a_cancelling_job_is_a_no_op(tmp_path: Path) -> None:
    """Cancelling a cancelling job again returns it unchanged and sends nothing more."""
    async with open_harness(tmp_path, emulator=emulator_config(cancel_seconds=20)) as h:
        job = await h.submit()
        await h.settle()
        await h.engine.cancel(job.id)
        await h.settle()
        history = await h.history(job.id)

        again = await h.engine.cancel(job.id)
        await h.settle()
        again_later = await h.engine.cancel(job.id)

        assert again.state is again_later.state is LocalState.CANCELLING
        assert await h.history(job.id) == history
        await h.run_until_ended(limit_s=300)
        assert h.requests("cancel") == 1
        assert (await h.job(job.id)).state is LocalState.CANCELLED


async def test_cancel_of_ended_or_unknown_job_is_refused(tmp_path: Path) -> None:
    """Cancelling an ended job is FailedPrecondition; an unknown id is NotFound."""
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=20)) as h:
        job = await h.submit()
        await h.run_until_ended(limit_s=300)

        with pytest.raises(errors.FailedPrecondition):
            await h.engine.cancel(job.id)
        with pytest.raises(errors.NotFound):
            await h.engine.cancel("no-such-job")
        assert h.requests("cancel") == 0


async def test_cancel_that_completes_anyway_is_recorded(tmp_path: Path) -> None:
    """A job Vertex finishes despite the cancel ends succeeded, completed_despite_cancel."""
    config = emulator_config(cancel_completes_probability=1.0, job_seconds=60)
    async with open_harness(tmp_path, emulator=config) as h:
        job = await h.submit()
        await h.settle()
        await _until_state(h, job.id, LocalState.RUNNING)
        await h.engine.cancel(job.id)
        await h.run_until_ended(limit_s=300)

        done = await h.job(job.id)
        assert (done.state, done.outcome) == (LocalState.SUCCEEDED,
                                              Outcome.COMPLETED_DESPITE_CANCEL)
        assert h.requests("cancel", "200") == 1


async def test_cancel_refused_because_the_job_just_ended_polls_and_takes_vertex_state(
        tmp_path: Path) -> None:
    """A cancel answered FAILED_PRECONDITION (the job ended meanwhile) is followed by a poll,
    and the job takes Vertex's terminal state."""
    async with open_harness(tmp_path, emulator=emulator_config(job_seconds=60)) as h:
        job = await h.submit()
        await h.settle()
        await _until_state(h, job.id, LocalState.RUNNING)
        h.emulator.advance(120)  # Vertex finishes; tuningd has not polled yet

        await h.engine.cancel(job.id)
        await h.settle()

        assert h.requests("cancel", "400") == 1
        done = await h.job(job.id)
        assert (done.state, done.outcome) == (LocalState.SUCCEEDED,
                                              Outcome.COMPLETED_DESPITE_CANCEL)
        assert any("FAILED_PRECONDITION" in r for r in await h.history(job.id))
