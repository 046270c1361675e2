"""Acceptance: cancelling queued, pending and running jobs, and a cancel right before a SIGKILL."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import (
    DaemonProc,
    EmulatorProc,
    Processes,
    job_body,
    job_id_of,
    remote_jobs_by_label,
    run_cli,
    wait_until,
)

pytestmark = pytest.mark.acceptance


def _local_state(daemon: DaemonProc, job_id: str) -> str:
    return str(daemon.job(job_id)["tuningd"]["state"])


def _remote(emu: EmulatorProc, job_id: str) -> dict[str, Any] | None:
    remotes = remote_jobs_by_label(emu.state()).get(job_id, [])
    assert len(remotes) <= 1, remotes
    return remotes[0] if remotes else None


def _wait_local(daemon: DaemonProc, job_id: str, *states: str, timeout_s: float = 20) -> None:
    wait_until(lambda: _local_state(daemon, job_id) in states, timeout_s,
               message=lambda: f"job {job_id} to reach {states}: {daemon.job(job_id)}")


def _assert_cancelled_everywhere(daemon: DaemonProc, emu: EmulatorProc, job_id: str) -> None:
    wait_until(lambda: daemon.job(job_id)["state"] == "JOB_STATE_CANCELLED", 20,
               message=lambda: f"job {job_id} to be cancelled: {daemon.job(job_id)}")
    remote = _remote(emu, job_id)
    assert remote is not None
    assert remote["state"] == "JOB_STATE_CANCELLED"
    assert remote["cancelRequested"] is True


def test_cancel_queued_pending_running_and_across_a_crash(procs: Processes) -> None:
    """A queued job is cancelled with no remote call, pending and running jobs end CANCELLED on
    Vertex and in tuningd, and a cancel followed at once by SIGKILL is carried out after restart."""
    # One emulated quota slot: the second remote job waits in PENDING while the first runs.
    emu = procs.emulator(job_seconds=120, pending_seconds=0.2, max_concurrent=1,
                         extra=["--cancel-seconds", "0.5"])
    daemon = procs.daemon(emu.url, {"limits": {"max_active": 2}})

    running = job_id_of(daemon.submit(job_body("running")))
    _wait_local(daemon, running, "running")
    pending = job_id_of(daemon.submit(job_body("pending")))
    _wait_local(daemon, pending, "pending")
    queued = job_id_of(daemon.submit(job_body("queued")))
    assert _local_state(daemon, queued) == "queued"
    pending_remote = _remote(emu, pending)
    assert pending_remote is not None and pending_remote["state"] == "JOB_STATE_PENDING"

    # Queued: the client CLI cancels it; it never reaches Vertex.
    result = run_cli("cancel", "--server", daemon.url, queued)
    assert result.returncode == 0, result.stderr
    assert "Cancellation requested" in result.stdout
    job = daemon.job(queued)
    assert job["state"] == "JOB_STATE_CANCELLED"
    assert job["tuningd"]["attempts"] == 0
    assert "remoteName" not in job["tuningd"]

    # Pending (waiting for quota on Vertex), then running: the HTTP API.
    assert daemon.cancel(pending).status == 200
    _assert_cancelled_everywhere(daemon, emu, pending)
    assert daemon.cancel(running).status == 200
    _assert_cancelled_everywhere(daemon, emu, running)

    # A cancel immediately followed by SIGKILL: the stored intent survives the crash.
    crash = job_id_of(daemon.submit(job_body("cancel-then-crash")))
    _wait_local(daemon, crash, "running")
    assert daemon.cancel(crash).status == 200
    daemon.kill()
    remote = _remote(emu, crash)
    # The daemon may or may not have sent the cancel before the kill (test_daemon_crash_points
    # kills it exactly between the stored intent and the remote call); either way it must end.
    assert remote is not None
    assert remote["state"] in ("JOB_STATE_RUNNING", "JOB_STATE_CANCELLING")
    daemon.start()
    _assert_cancelled_everywhere(daemon, emu, crash)

    # The queued job never had a remote create, even after everything settled.
    assert _remote(emu, queued) is None
    assert len(emu.state()["jobs"]) == 3
    assert daemon.cancel(queued).json["error"]["status"] == "FAILED_PRECONDITION"


def test_cancel_while_the_create_outcome_is_unknown_then_sigkill(procs: Processes) -> None:
    """A cancel that arrives while the create's outcome is unknown (job created on Vertex, reply
    lost, reconcile failing), followed by SIGKILL and a restart, ends CANCELLED on both sides."""
    emu = procs.emulator(job_seconds=120, pending_seconds=0.2, max_concurrent=1,
                         extra=["--cancel-seconds", "0.5"])
    # Vertex creates the job but the reply is lost, and listing (reconcile) keeps failing:
    # the job stays `submitting` with a real remote job behind it.
    emu.set_faults({"lost_reply_rate": 1.0, "error_rate": {"list": 1.0}})
    daemon = procs.daemon(emu.url, {"limits": {"max_active": 1}})
    job_id = job_id_of(daemon.submit(job_body("in-flight")))
    wait_until(lambda: _remote(emu, job_id) is not None, 20, message="the remote create")
    _wait_local(daemon, job_id, "submitting")
    assert daemon.cancel(job_id).status == 200
    job = daemon.job(job_id)
    assert job["tuningd"]["cancelRequested"] is True
    assert job["tuningd"]["state"] == "submitting"
    daemon.kill()
    emu.set_faults({})
    daemon.start()
    _assert_cancelled_everywhere(daemon, emu, job_id)
    assert len(emu.state()["jobs"]) == 1
