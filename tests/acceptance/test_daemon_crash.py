"""Acceptance: SIGKILL of the daemon at random moments under injected Vertex faults."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
from helpers import (
    DaemonProc,
    EmulatorProc,
    Processes,
    job_body,
    job_id_of,
    remote_jobs_by_label,
    wait_until,
)

pytestmark = pytest.mark.acceptance

N_JOBS = 30
MIN_KILLS = 5
SEED = int(os.environ.get("ACCEPTANCE_SEED", "20240607"))  # vary to explore


def _total_requests(emu: EmulatorProc) -> int:
    counts = emu.state()["requestCounts"]
    return sum(n for method, by_outcome in counts.items() if method != "token"
               for n in by_outcome.values())


def _kill_after_some_requests(daemon: DaemonProc, emu: EmulatorProc, rng: random.Random) -> None:
    """SIGKILL the daemon once it has made a random number of Vertex calls since now (a random
    moment in the daemon's own timeline: mid-create, mid-reconcile, mid-poll...)."""
    target = _total_requests(emu) + rng.randint(1, 15)
    wait_until(lambda: _total_requests(emu) >= target or not daemon.alive(), 30,
               interval_s=0.02, message="the daemon to make progress before the kill")
    daemon.check_alive()
    daemon.kill()


def test_sigkill_under_faults_loses_and_duplicates_nothing(procs: Processes,
                                                           tmp_path: Path) -> None:
    """Under 20% injected 503s and 20% lost create replies, with the daemon SIGKILLed at least five
    times at random moments, every accepted job ends SUCCEEDED with exactly one remote job."""
    rng = random.Random(SEED)
    emu = procs.emulator(job_seconds=1.0, pending_seconds=0.3, max_concurrent=4,
                         extra=["--seed", str(SEED), "--error-rate", "0.2",
                                "--error-status", "503", "--lost-reply-rate", "0.2"])
    daemon = procs.daemon(emu.url, {"limits": {"max_active": 4}})
    started = time.monotonic()

    ids: list[str] = []
    kills = 0
    batches = [10, 10, 10]
    for batch in batches:  # jobs keep arriving between crashes
        ids.extend(job_id_of(daemon.submit(job_body(f"crash-{len(ids) + i}")))
                   for i in range(batch))
        _kill_after_some_requests(daemon, emu, rng)
        kills += 1
        daemon.start()
    assert len(set(ids)) == N_JOBS

    def finished() -> bool:
        states = daemon.states(ids)
        return len(states) == N_JOBS and all(s == "JOB_STATE_SUCCEEDED" for s in states.values())

    while kills < MIN_KILLS:
        assert not finished(), f"all jobs ended after only {kills} kills; kill sooner"
        _kill_after_some_requests(daemon, emu, rng)
        kills += 1
        daemon.start()
    wait_until(finished, 120, interval_s=0.3,
               message=lambda: f"all jobs to succeed: {daemon.states(ids)}\n{procs.dump()}")
    wall_s = time.monotonic() - started

    # Nothing lost: every accepted id is known and succeeded.
    states = daemon.states(ids)
    assert sorted(states) == sorted(ids)
    assert set(states.values()) == {"JOB_STATE_SUCCEEDED"}, states
    # Nothing duplicated: exactly one remote job per local job, and no stray ones.
    state = emu.state()
    by_label = remote_jobs_by_label(state)
    duplicates = {k: len(v) for k, v in by_label.items() if len(v) != 1}
    assert not duplicates, duplicates
    assert sorted(by_label) == sorted(ids)
    assert all(j["state"] == "JOB_STATE_SUCCEEDED" for j in state["jobs"])
    # Each job's tuned model is the one of its own remote job.
    for job_id in ids[:3]:
        job = daemon.job(job_id)
        remote = by_label[job_id][0]
        assert job["tuningd"]["remoteName"] == remote["name"]
        assert job["tunedModel"]["model"] == remote["job"]["tunedModel"]["model"]

    counts = state["requestCounts"]
    injected = {
        "errors_503": sum(c.get("503", 0) for m, c in counts.items() if m != "token"),
        "lost_create_replies": counts.get("create", {}).get("lost_reply_dropped", 0),
    }
    assert injected["errors_503"] > 0 and injected["lost_create_replies"] > 0, counts
    starts = [r for r in daemon.log_records() if r.get("event") == "engine.started"]
    assert len(starts) == kills + 1
    figures = {
        "jobs": N_JOBS, "kills": kills, "seed": SEED, "injected": injected,
        "restarts_reconciling_submitting": sum(1 for r in starts if r.get("reconciling")),
        "remote_creates": len(state["jobs"]),
        "create_calls": sum(counts.get("create", {}).values()),
        "request_counts": counts, "wall_s": round(wall_s, 2),
    }
    print("\nscenario 2 figures:", json.dumps(figures))
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2))
