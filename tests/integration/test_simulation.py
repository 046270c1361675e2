"""The deterministic simulation in CI: seeds on the CI baseline, replay determinism, the
checks themselves, and the known-breakage seeds (strict xfail until their fixes land)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.sim import known_seeds
from tests.sim.driver import Driver, Outcome, engine_log_capture, run_seed
from tests.sim.invariants import SimJob
from tests.sim.options import CI_BASELINE, SimOptions
from tests.sim.world import GOOD_DATASET, spec
from tuningd.core.model import LocalState, ours_labels

ROOT = Path(__file__).resolve().parents[2]
CI_OPTIONS = SimOptions().with_features(CI_BASELINE)
# About a third of a second each on a 2-core machine.
CI_SEEDS = range(60)


def _explain(outcome: Outcome) -> str:
    assert outcome.violation is not None
    return (f"seed {outcome.seed} broke {outcome.violation.invariant}: "
            f"{outcome.violation.message}\n" + "\n".join(outcome.tail)
            + f"\nreplay: {outcome.replay_command()}")


@pytest.mark.parametrize("seed", CI_SEEDS)
async def test_seed_keeps_every_promise(seed: int) -> None:
    """A seeded run of submits, cancels, faults, crashes and limit changes keeps every invariant
    after every step and ends with every job terminal and matching Vertex."""
    outcome = await run_seed(seed, CI_OPTIONS)
    assert outcome.ok, _explain(outcome)


async def test_same_seed_gives_the_same_trace() -> None:
    """Running one seed twice in one process gives the same step trace (hash); another seed
    gives another."""
    first = await run_seed(7, CI_OPTIONS)
    second = await run_seed(7, CI_OPTIONS)
    other = await run_seed(8, CI_OPTIONS)
    assert first.steps > 100
    assert first.trace_hash == second.trace_hash
    assert other.trace_hash != first.trace_hash


async def test_replay_command_reproduces_the_trace_in_a_fresh_process() -> None:
    """`python -m tests.sim --seed N`, in new processes with other hash seeds, prints the trace
    hash of the same seed run here: a failing seed can be replayed exactly anywhere."""
    here = await run_seed(3, CI_OPTIONS)
    features = ",".join(sorted(CI_BASELINE))
    for hash_seed in ("12345", "54321"):
        proc = subprocess.run(
            [sys.executable, "-m", "tests.sim", "--seed", "3", "--features", features],
            cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": hash_seed}, capture_output=True,
            text=True, timeout=120, check=False)
        match = re.search(r"trace ([0-9a-f]{16})", proc.stdout)
        assert match, proc.stdout + proc.stderr
        assert match.group(1) == here.trace_hash[:16], proc.stdout


async def test_beyond_the_bounds_extra_remote_jobs_are_cancelled_or_reported() -> None:
    """With late creates and list lags ten times what the daemon assumes, a seed whose creates
    landed twice still ends with every extra remote job cancelled or reported."""
    outcome = await run_seed(10, SimOptions(beyond_bounds=True))
    assert outcome.ok, _explain(outcome)
    assert outcome.stats["extras"] >= 1


# ------------------------------------------------------------------ the checks can fail

# Creates landing up to 10 minutes late while the daemon assumes one request timeout (60 s):
# seeds that, on this engine, post a job twice or cancel one locally that then lands.
LATE_BEYOND = SimOptions(late_create_max_s=600.0).with_features(frozenset({"late_creates"}))


@pytest.mark.parametrize(("seed", "invariant"), [(8, "duplicate"), (12, "cancel")])
async def test_creates_landing_later_than_the_daemon_assumes_are_caught(
        seed: int, invariant: str) -> None:
    """Faults past the daemon's assumptions, checked as if within them, break exactly-once on
    a known seed: the simulation does catch what the engine cannot prevent. (If the sim's step
    choice changed, re-find the seeds: `python -m tests.sim.hunt --invariant ... --features
    late_creates --late-create-max 600`.)"""
    outcome = await run_seed(seed, LATE_BEYOND)
    assert outcome.violation is not None, f"seed {seed} kept every promise"
    assert outcome.violation.invariant == invariant, _explain(outcome)



@pytest.fixture
async def driver() -> AsyncIterator[Driver]:
    d = Driver(11, SimOptions().with_features(frozenset()))
    with engine_log_capture(d.world.events):
        await d.world.open()
        try:
            yield d
        finally:
            await d.world.close()


async def _submit(d: Driver) -> str:
    job, _ = await d.world.engine.submit("proj-a", "us-central1",
                                         spec("gemini-2.5-flash", GOOD_DATASET, "t"))
    d.checker.jobs[job.id] = SimJob(job.id, valid=True)
    return job.id


def _remote_for(d: Driver, job_id: str) -> None:
    body = {**spec("gemini-2.5-flash", GOOD_DATASET, "t"),
            "labels": ours_labels(job_id)}
    d.world.emulator.state.create(body, api_version="v1", project="proj-a",
                                  location="us-central1")


async def test_two_remote_jobs_for_one_local_job_break_invariant_1(driver: Driver) -> None:
    """A second remote job labelled with one local id is reported as a duplicate."""
    job_id = await _submit(driver)
    _remote_for(driver, job_id)
    assert driver.checker.check_step() is None
    _remote_for(driver, job_id)
    violation = driver.checker.check_step()
    assert violation is not None and violation.invariant == "duplicate"


async def test_more_remote_jobs_than_the_limit_break_invariant_2(driver: Driver) -> None:
    """One remote active job more than max_active is a limit violation."""
    for _ in range(driver.world.settings.limits.max_active + 1):
        _remote_for(driver, await _submit(driver))
    violation = driver.checker.check_step()
    assert violation is not None and violation.invariant == "limit"


async def test_a_remote_job_for_a_job_cancelled_while_queued_breaks_invariant_4(
        driver: Driver) -> None:
    """A job cancelled while queued must never get a remote job."""
    job_id = await _submit(driver)
    cancelled = await driver.world.engine.cancel(job_id)
    assert cancelled.state is LocalState.CANCELLED
    driver.checker.jobs[job_id].cancelled_in = cancelled.state
    assert driver.checker.check_step() is None
    _remote_for(driver, job_id)
    violation = driver.checker.check_step()
    assert violation is not None and violation.invariant == "cancel"


async def test_a_job_left_queued_breaks_the_end_check(driver: Driver) -> None:
    """A job that never ends is reported as stuck by the final check."""
    await _submit(driver)
    violation = await driver.checker.check_end()
    assert violation is not None and violation.invariant == "stuck"


# ------------------------------------------------------------------ known breakages (issue 7)


class InvariantBroken(AssertionError):
    """A known seed broke its invariant (the expected failure of a strict xfail)."""


_BROKEN: dict[str, type[InvariantBroken]] = {
    name: type(f"{name.title().replace('_', '')}Broken", (InvariantBroken,), {})
    for name in ("duplicate", "limit", "tracking", "lost", "stuck", "cancel", "history",
                 "action_failed")
}


def _known(breakage: known_seeds.Breakage) -> object:
    marks = []
    if breakage.name not in known_seeds.FIXED:
        marks.append(pytest.mark.xfail(strict=True, raises=_BROKEN[breakage.invariant],
                                       reason=f"issue 7: {breakage.what}"))
    return pytest.param(breakage, id=breakage.name, marks=marks)


@pytest.mark.parametrize("breakage", [_known(b) for b in known_seeds.BREAKAGES])
async def test_known_breakage_seed(breakage: known_seeds.Breakage) -> None:
    """The smallest seed that showed a known breakage keeps every promise. An unfixed breakage
    is a strict xfail on exactly its invariant; once fixed (known_seeds.FIXED) it must pass."""
    outcome = await run_seed(known_seeds.SEEDS[breakage.name], breakage.options())
    if outcome.violation is not None:
        error = _BROKEN.get(outcome.violation.invariant, AssertionError)
        raise error(_explain(outcome))
