"""The reasons in a job's `tuningd` object: its last error and when tuningd next acts on it."""

from __future__ import annotations

from typing import Any

from tuningd.core import recovery
from tuningd.core.model import Job, LocalState, Outcome
from tuningd.http.jobview import job_view
from tuningd.vertex import wire

NOW = 1_780_000_000.0


def _job(state: LocalState = LocalState.QUEUED, **changes: Any) -> Job:
    return Job(id="job-1", project="p", location="us-central1",
               spec_json='{"baseModel": "gemini-2.5-flash"}', base_model="gemini-2.5-flash",
               state=state, created_at=NOW - 100, updated_at=NOW - 10).evolve(**changes)


def _ext(job: Job, pause: recovery.Pause | None = None) -> dict[str, Any]:
    ext: dict[str, Any] = job_view(job, pause=pause, now=NOW)["tuningd"]
    return ext


def test_last_error_shows_code_status_message_and_time() -> None:
    """A recorded error is rendered as lastError with its google.rpc name and RFC 3339 time."""
    job = _job(last_error_code=16, last_error_message="no usable Google credentials",
               last_error_at=NOW - 5)
    assert _ext(job)["lastError"] == {"code": 16, "status": "UNAUTHENTICATED",
                                      "message": "no usable Google credentials",
                                      "time": wire.format_timestamp(NOW - 5)}


def test_last_error_is_hidden_once_the_job_succeeded_but_kept_when_it_failed() -> None:
    """A succeeded job shows no lastError; a failed one still does."""
    fields = {"last_error_code": 14, "last_error_message": "flaky", "last_error_at": NOW - 50,
              "ended_at": NOW - 1, "outcome": Outcome.NORMAL}
    assert "lastError" not in _ext(_job(LocalState.SUCCEEDED, **fields))
    assert _ext(_job(LocalState.FAILED, **fields))["lastError"]["status"] == "UNAVAILABLE"
    assert "lastError" not in _ext(_job(LocalState.RUNNING))


def test_next_attempt_time_of_a_retry_and_a_poll() -> None:
    """A queued job backing off and a running job awaiting its poll show their next time."""
    retry = _job(next_action_at=NOW + 30, retry_count=1)
    assert _ext(retry)["nextAttemptTime"] == wire.format_timestamp(NOW + 30)
    poll = _job(LocalState.RUNNING, next_action_at=NOW + 60, remote_name="projects/p/x")
    assert _ext(poll)["nextAttemptTime"] == wire.format_timestamp(NOW + 60)


def test_no_next_attempt_time_when_waiting_for_capacity_or_ended() -> None:
    """A queued job that is due (it waits only for a free slot) and an ended job show none."""
    assert "nextAttemptTime" not in _ext(_job(next_action_at=NOW - 1))
    ended = _job(LocalState.CANCELLED, next_action_at=NOW + 60, ended_at=NOW - 1)
    assert "nextAttemptTime" not in _ext(ended)


def test_a_paused_place_gives_its_probe_time() -> None:
    """A queued job whose place's creates are paused next moves at the probe."""
    pause = recovery.Pause(status="UNAUTHENTICATED", message="no credentials", since=NOW - 20,
                           probe_at=NOW + 40)
    ext = _ext(_job(next_action_at=NOW - 20, retry_count=1), pause)
    assert ext["nextAttemptTime"] == wire.format_timestamp(NOW + 40)
    assert ext["createsPaused"]["nextProbeTime"] == ext["nextAttemptTime"]
