"""Expected ends of running jobs (core/eta) and the poll schedule that follows them."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tuningd.config import PollingSettings
from tuningd.core.eta import Eta, RunModel, size_of
from tuningd.core.model import Job, LocalState
from tuningd.core.schedule import schedule_poll
from tuningd.emulator.config import EmulatorConfig, ManualClock
from tuningd.emulator.state import EmulatorState
from tuningd.vertex import wire

T0 = 1_750_000_000.0
POLLING = PollingSettings()


def remote(*, created: float, start: float | None = None, end: float | None = None,
           tokens: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"createTime": wire.format_timestamp(created)}
    if start is not None:
        out["startTime"] = wire.format_timestamp(start)
    if end is not None:
        out["endTime"] = wire.format_timestamp(end)
    if tokens is not None:
        out["tuningDataStats"] = {"supervisedTuningDataStats": {
            "totalBillableTokenCount": str(tokens), "tuningStepCount": "90"}}
    return out


def job(state: LocalState, body: dict[str, Any], job_id: str = "j") -> Job:
    import json
    return Job(id=job_id, project="p", location="us-central1", spec_json="{}",
               base_model="publishers/google/models/gemini-2.5-flash", state=state,
               created_at=T0, updated_at=T0, remote_json=json.dumps(body))


def trained(model: RunModel, run_s: float, tokens: int, job_id: str) -> None:
    model.learn(job(LocalState.SUCCEEDED, remote(created=T0, start=T0 + 60,
                                                 end=T0 + 60 + run_s, tokens=tokens), job_id))


def test_size_is_billable_tokens_else_steps() -> None:
    """A job's size is its billable tokens, else its tuning steps, else unknown."""
    assert size_of(remote(created=T0, tokens=1000)) == ("totalBillableTokenCount", 1000.0)
    steps = {"tuningDataStats": {"distillationDataStats": {"tuningStepCount": 40}}}
    assert size_of(steps) == ("tuningStepCount", 40.0)
    assert size_of({"tuningDataStats": {}}) is None and size_of(None) is None


def test_nothing_learned_means_no_expectation() -> None:
    """Without a succeeded job of its base model, a running job has no expected end."""
    model = RunModel()
    running = job(LocalState.RUNNING, remote(created=T0, start=T0 + 60, tokens=1000))
    assert model.eta(running, max_interval_s=300) is None
    trained(model, 3600, 1000, "other")
    pro = running.evolve(base_model="gemini-2.5-pro")
    assert model.eta(pro, max_interval_s=300) is None


def test_expected_end_follows_the_run_time_per_token_of_earlier_jobs() -> None:
    """Two jobs that ran 1 s per 1000 tokens put a 2,000,000-token job's end 2000 s after its
    start, quiet until the spread before it; its window is polled every spread."""
    model = RunModel()
    trained(model, 1000, 1_000_000, "a")
    trained(model, 1020, 1_000_000, "b")
    start = T0 + 300
    running = job(LocalState.RUNNING, remote(created=T0, start=start, tokens=2_000_000))
    eta = model.eta(running, max_interval_s=300)
    assert eta is not None
    expected = start + 2 * 1010.0
    assert eta.quiet_until == pytest.approx(expected - eta.window_interval_s)
    assert 60.0 <= eta.window_interval_s <= 300.0
    assert eta.overdue_at == pytest.approx(expected + 2 * max(eta.window_interval_s, 101.0),
                                           rel=0.05)


def test_without_its_size_a_job_is_not_expected_before_the_shortest_run() -> None:
    """A job whose dataset is not read yet is left alone until 90 % of the shortest run seen."""
    model = RunModel()
    trained(model, 3000, 1_000_000, "a")
    pending = job(LocalState.PENDING, remote(created=T0 + 10))
    eta = model.eta(pending, max_interval_s=300)
    assert eta is not None
    assert eta.quiet_until == pytest.approx(T0 + 10 + 0.9 * 3060)


def test_a_quiet_job_is_next_read_when_it_could_end_but_never_later_than_quiet_max() -> None:
    """Far from its end the next read is the window's start or quiet_max_s away, whichever
    comes first; in the window every window interval; once overdue the usual ramp."""
    rng = random.Random(1)
    running = job(LocalState.RUNNING, remote(created=T0, start=T0))
    now = T0 + 100
    soon = Eta(quiet_until=now + 500, window_interval_s=120, overdue_at=now + 900)
    assert schedule_poll(running, False, now, POLLING, rng, soon).next_poll_at == now + 500
    far = Eta(quiet_until=now + 10_000, window_interval_s=120, overdue_at=now + 11_000)
    assert schedule_poll(running, False, now, POLLING,
                         rng, far).next_poll_at == now + POLLING.quiet_max_s
    inside = Eta(quiet_until=now - 1, window_interval_s=120, overdue_at=now + 300)
    assert schedule_poll(running, False, now, POLLING, rng, inside).next_poll_at == now + 120
    overdue = Eta(quiet_until=now - 500, window_interval_s=120, overdue_at=now - 1)
    ramp = schedule_poll(running, False, now, POLLING, rng, overdue)
    assert ramp.next_poll_at <= now + POLLING.max_interval_s * (1 + POLLING.jitter)


def test_a_cancelling_job_ignores_its_expected_end() -> None:
    """A cancel is followed at the initial interval whatever the expectation."""
    cancelling = job(LocalState.CANCELLING, remote(created=T0, start=T0))
    far = Eta(quiet_until=T0 + 10_000, window_interval_s=120, overdue_at=T0 + 11_000)
    sched = schedule_poll(cancelling, True, T0, POLLING, random.Random(1), far)
    assert sched.next_poll_at <= T0 + POLLING.initial_interval_s * (1 + POLLING.jitter)


def test_emulator_run_time_follows_billable_tokens_when_asked() -> None:
    """With seconds_per_million_tokens the emulator runs a job for its tokens x that rate
    (within run_spread); before its dataset is read, job_seconds stands in."""
    config = EmulatorConfig(seconds_per_million_tokens=3600.0, run_spread=0.1, job_seconds=5.0)
    state = EmulatorState(config, ManualClock())

    class _Job:
        job_id = "123"
        stats: dict[str, Any] | None = None

    emulated: Any = _Job()
    assert state.phase_seconds(emulated)[1] == 5.0
    emulated.stats = {"supervisedTuningDataStats": {"totalBillableTokenCount": 2_000_000}}
    assert 7200 * 0.9 <= state.phase_seconds(emulated)[1] <= 7200 * 1.1
