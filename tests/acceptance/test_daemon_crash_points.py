"""Acceptance: SIGKILL of the real daemon at each named crash point, then the same invariants."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    DaemonProc,
    EmulatorProc,
    Proc,
    Processes,
    http,
    job_body,
    job_id_of,
    remote_jobs_by_label,
    wait_until,
)

pytestmark = pytest.mark.acceptance

TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}
# A short timeout shortens the wait before an unknown create may be presumed absent.
FAST = {"vertex": {"request_timeout_s": 2.0}}


def _die_at(daemon: DaemonProc, point: str, trigger: Callable[[], object]) -> None:
    """Arm `point`, run `trigger` (errors from a dying daemon are expected) and wait for the
    SIGKILL the failpoint sends; then disarm it."""
    daemon.env["TUNINGD_FAILPOINTS"] = point
    Proc.start(daemon)  # not DaemonProc.start: it may die before it is ready

    def ready_or_dead() -> bool:
        if not daemon.alive():
            return True
        try:
            return http("GET", daemon.url + "/readyz", timeout_s=2).status == 200
        except OSError:
            return False

    wait_until(ready_or_dead, 30, message=lambda: f"daemon to start\n{daemon.tail()}")
    if daemon.alive():
        with contextlib.suppress(AssertionError, OSError):  # it may die before it answers
            trigger()
    assert daemon.popen is not None
    assert daemon.popen.wait(timeout=30) == -9, daemon.tail()
    assert f"failpoint {point}" in daemon.logs()
    del daemon.env["TUNINGD_FAILPOINTS"]


def _check_invariants(daemon: DaemonProc, emu: EmulatorProc, job_id: str, *,
                      want: str, remote_jobs: int = 1) -> None:
    """The job ends in `want` with exactly `remote_jobs` remote jobs, in the same state, and a
    history that chains from `queued` to its final state."""
    def ended() -> bool:
        return daemon.job(job_id)["state"] in TERMINAL
    wait_until(ended, 60, message=lambda: f"{job_id} to end\n{daemon.tail()}")
    view = daemon.job(job_id)
    assert view["state"] == want, view
    remotes = remote_jobs_by_label(emu.state()).get(job_id, [])
    assert len(remotes) == remote_jobs, remotes
    if remotes:
        assert remotes[0]["state"] == want
        assert view["tuningd"]["remoteName"].endswith(remotes[0]["jobId"])
    history = view["tuningd"]["history"]
    assert history[0]["from"] is None and history[0]["to"] == "queued"
    for before, after in itertools.pairwise(history):
        assert after["from"] == before["to"], history
    assert history[-1]["to"] == view["tuningd"]["state"]


@pytest.mark.parametrize("point", ["submit.intent_written", "create.awaiting_reply",
                                   "create.reply_received"])
def test_kill_during_a_create_leaves_exactly_one_remote_job(procs: Processes, tmp_path: Path,
                                                             point: str) -> None:
    """Killed with the intent written, with the POST in flight, or with the reply read but not
    stored, the restarted daemon reconciles and the job succeeds with one remote job."""
    # Latency keeps the POST in flight long enough for create.awaiting_reply to strike.
    emu = procs.emulator(job_seconds=1.0, pending_seconds=0.2, extra=["--latency", "0.5"])
    daemon = procs.daemon(emu.url, FAST, start=False)
    ids: list[str] = []
    _die_at(daemon, point, lambda: ids.append(job_id_of(daemon.submit(job_body(point)))))

    daemon.start()
    _check_invariants(daemon, emu, ids[0], want="JOB_STATE_SUCCEEDED")


@pytest.mark.parametrize("point", ["cancel.intent_written", "cancel.sent"])
def test_kill_during_a_cancel_still_cancels_on_vertex(procs: Processes, tmp_path: Path,
                                                      point: str) -> None:
    """Killed with the cancel intent stored but not sent, or sent but its acknowledgement not
    stored, the restarted daemon carries the cancel out: the job ends cancelled on Vertex."""
    emu = procs.emulator(job_seconds=3600, pending_seconds=0.2)
    daemon = procs.daemon(emu.url, FAST)
    job_id = job_id_of(daemon.submit(job_body(point)))
    wait_until(lambda: daemon.job(job_id)["state"] == "JOB_STATE_RUNNING", 30,
               message="the job to run")
    daemon.kill()
    _die_at(daemon, point, lambda: daemon.cancel(job_id))

    daemon.start()
    _check_invariants(daemon, emu, job_id, want="JOB_STATE_CANCELLED")
    (remote,) = remote_jobs_by_label(emu.state())[job_id]
    assert remote["cancelRequested"]


def test_kill_in_the_middle_of_a_migration_leaves_the_old_schema(procs: Processes,
                                                                 tmp_path: Path) -> None:
    """A daemon killed inside a schema migration leaves the database at its old version with its
    jobs intact; the next start migrates it and the job runs to success."""
    emu = procs.emulator(job_seconds=3.0, pending_seconds=0.2, max_concurrent=1)
    daemon = procs.daemon(emu.url, {**FAST, "limits": {"max_active": 1}})
    job_id = job_id_of(daemon.submit(job_body("old-schema")))
    daemon.stop()
    # Make it a version 2 database: what migrations 3 to 6 add is not there yet.
    db = Path(daemon.config["store"]["path"])
    with sqlite3.connect(db) as raw:
        raw.execute("DROP INDEX jobs_ended")
        for column in ("attempt_ended_at", "absent_checks", "missing_checks", "api_version",
                       "last_error_code", "last_error_message", "last_error_at"):
            raw.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        raw.execute("PRAGMA user_version = 2")

    _die_at(daemon, "store.mid_migration", lambda: None)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
        columns = {row[1] for row in raw.execute("PRAGMA table_info(jobs)")}
        assert "attempt_ended_at" not in columns
        assert raw.execute("SELECT COUNT(*) FROM jobs WHERE id = ?", (job_id,)).fetchone() == (1,)

    daemon.start()
    assert http("GET", daemon.url + "/readyz").status == 200
    _check_invariants(daemon, emu, job_id, want="JOB_STATE_SUCCEEDED")
