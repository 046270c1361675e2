"""What the CLI client shows of jobs and of the daemon's status, from their JSON alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tuningd.client.details import format_job_details
from tuningd.client.jobs import (
    age_or_run_time,
    duration,
    parse_time,
    reason,
    rows,
    short_ids,
    substate,
)
from tuningd.client.live import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    Change,
    Tracker,
    outcome,
    state_label,
)
from tuningd.client.render import job_table, to_text
from tuningd.client.status import status_view

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "status.json"
NOW = parse_time("2026-11-29T22:05:00Z") or 0.0


def job(ident: str = "0123abcd-0000", state: str = "queued", **fields: Any) -> dict[str, Any]:
    ext = {"state": state, "priority": 0, **fields.pop("ext", {})}
    return {"name": f"projects/p/locations/us-central1/tuningJobs/{ident}",
            "createTime": "2026-11-29T22:00:00Z", "tuningd": ext, **fields}


def test_short_ids_are_eight_characters_unless_two_need_more() -> None:
    """Ids are cut to 8 characters, or to the first length that tells every id in the view
    apart."""
    assert short_ids(["0123abcd-1111", "9999ffff-2222"]) == {
        "0123abcd-1111": "0123abcd", "9999ffff-2222": "9999ffff"}
    assert set(short_ids(["0123abcd-1111", "0123abcd-2222", "x"]).values()) == {
        "0123abcd-1", "0123abcd-2", "x"}
    assert short_ids([]) == {}


def test_durations_read_in_their_two_largest_units() -> None:
    """45s, 3m07s, 2h05m, 3d04h; negative spans (clock skew) read 0s."""
    assert [duration(s) for s in (45, 187, 7500, 273600, -5)] == [
        "45s", "3m07s", "2h05m", "3d04h", "0s"]


def test_age_is_queued_time_and_run_time_once_started() -> None:
    """A queued job shows its age since creation, a running one the time since it started, an
    ended one how long it ran; nanosecond timestamps parse."""
    assert age_or_run_time(job(), NOW) == "5m00s"
    running = job(state="running", startTime="2026-11-29T22:04:00.123456789Z")
    assert age_or_run_time(running, NOW) == "59s"
    done = job(state="succeeded", startTime="2026-11-29T22:01:00Z",
               endTime="2026-11-29T22:03:30Z")
    assert age_or_run_time(done, NOW) == "2m30s"
    assert age_or_run_time({"tuningd": {"state": "queued"}}, NOW) == "-"


def test_reason_is_the_last_error_then_paused_creates_then_a_failure() -> None:
    """The reason column shows lastError (status and clipped message), else why creates are
    paused, else a failed job's error, else nothing."""
    stuck = job(ext={"lastError": {"code": 16, "status": "UNAUTHENTICATED",
                                   "message": "no usable Google credentials " * 5,
                                   "time": "2026-11-29T22:04:00Z"}})
    text = reason(stuck)
    assert text.startswith("UNAUTHENTICATED: no usable Google credentials")
    assert len(text) == 48 and text.endswith("…")
    paused = job(ext={"createsPaused": {"status": "PERMISSION_DENIED", "message": "off"}})
    assert reason(paused) == "creates paused: PERMISSION_DENIED: off"
    failed = job(state="failed", error={"code": 3, "message": "Invalid dataset."})
    assert reason(failed) == "Invalid dataset."
    assert reason(job()) == ""


def test_substates_read_short() -> None:
    """Vertex's TUNING_JOB_STATE_* sub-state reads as a short word; none reads empty."""
    assert substate(job(ext={"remoteSubstate": "TUNING_JOB_STATE_WAITING_FOR_QUOTA"})) == (
        "waiting-for-quota")
    assert substate(job(ext={"remoteSubstate": "TUNING_JOB_STATE_UNSPECIFIED"})) == ""
    assert state_label(job(state="running", ext={"remoteSubstate": "TUNING_JOB_STATE_TUNING"})
                       ) == "running/tuning"


def test_the_job_table_has_every_column_in_plain_text() -> None:
    """Off a terminal the table is plain columns (no escape codes, no trailing blanks) with
    id, state, sub-state, priority, queue position, age, place, name and reason; markup in a
    display name is printed as it is."""
    jobs = [job("0123abcd-1", ext={"queuePosition": 2, "priority": 5},
                tunedModelDisplayName="[bold]x[/bold] :smile:"),
            job("0123abcd-2", state="running", startTime="2026-11-29T22:04:30Z",
                ext={"remoteSubstate": "TUNING_JOB_STATE_TUNING"})]
    text = to_text(job_table(rows(jobs, NOW), with_place=True))
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "STATE", "SUB-STATE", "PRIORITY", "QUEUE", "AGE",
                                "PROJECT/LOCATION", "DISPLAY", "NAME", "REASON"]
    assert lines[1].split() == ["0123abcd-1", "queued", "-", "5", "2", "5m00s",
                                "p/us-central1", "[bold]x[/bold]", ":smile:"]
    assert lines[2].split() == ["0123abcd-2", "running", "tuning", "0", "-", "30s",
                                "p/us-central1", "-"]
    assert "\x1b" not in text and all(line == line.rstrip() for line in lines)


def test_details_show_the_reasons() -> None:
    """show prints the last error with its status, code and time, the next attempt with how far
    off it is, and why creates are paused."""
    text = format_job_details(job(ext={
        "lastError": {"code": 16, "status": "UNAUTHENTICATED", "message": "no credentials",
                      "time": "2026-11-29T22:04:00.5Z"},
        "nextAttemptTime": "2026-11-29T22:05:30Z",
        "createsPaused": {"status": "PERMISSION_DENIED", "message": "API disabled",
                          "since": "2026-11-29T22:03:00Z",
                          "nextProbeTime": "2026-11-29T22:06:00Z"}}), now=NOW)
    assert "last error:      UNAUTHENTICATED (16): no credentials at 2026-11-29T22:04:00Z" in text
    assert "next attempt:    2026-11-29T22:05:30Z (in 30s)" in text
    assert "creates paused:  PERMISSION_DENIED: API disabled (since 2026-11-29T22:03:00Z, " \
           "next probe 2026-11-29T22:06:00Z (in 1m00s))" in text
    assert "last error" not in format_job_details(job(), now=NOW)


def test_status_reads_the_agreed_document() -> None:
    """The status document (the agreed shape, from a fixture) reads as the role, counts by
    state in lifecycle order, the queue with its oldest job, the last poll, every limit (full
    ones marked) and the paused creates."""
    status = json.loads(FIXTURE.read_text())
    text = to_text(status_view(status, now=NOW))
    lines = text.splitlines()
    assert lines[0] == "tuningd         0.1.0, leader (runs the queue)"
    assert lines[1] == ("jobs            queued 3  submitting 0  pending 1  running 2  "
                        "cancelling 0  succeeded 10  failed 1  cancelled 0")
    assert lines[2] == ("queue           3 jobs queued, oldest since 2026-11-29T22:00:00Z "
                        "(4m59s ago)")
    assert lines[3] == "last good poll  2026-11-29T22:04:57Z (3s ago)"
    limits = {line.split()[0]: line.split()[1:] for line in lines[5:9]}
    assert limits["LIMIT"] == ["ACTIVE", "OF"]
    assert limits["global"] == ["3", "3", "full"]
    assert limits["projects/demo-proj/locations/us-central1"] == ["1", "4"]
    assert limits["baseModel/gemini-2.5-flash"] == ["2", "5"]
    paused = lines[-1].split()
    assert paused[:4] == ["projects/demo-proj/locations/europe-west4", "PERMISSION_DENIED",
                          "2026-11-29T22:03:00Z", "2026-11-29T22:06:00Z"]
    assert "Vertex AI API has not been used" in lines[-1]


def test_status_of_an_idle_daemon() -> None:
    """Nothing queued, no poll yet, no limits and no pause read as such."""
    text = to_text(status_view({"version": "0.1.0", "role": "single", "counts": {},
                                "queue": {"depth": 0, "oldestQueuedTime": None}, "limits": [],
                                "pausedCreates": [], "lastSuccessfulPollTime": None}, now=NOW))
    assert "0 jobs queued\n" in text and "last good poll  never" in text
    assert text.endswith("creates: not paused anywhere")


def test_the_tracker_reports_firsts_and_changes_only() -> None:
    """A job is reported when first seen and when its state, sub-state or last error changes,
    not when only its age or queue position does; ended jobs are remembered in order, the
    latest few only when asked to forget."""
    tracker = Tracker()
    first = tracker.merge({"a": job("a"), "b": job("b")})
    assert [c.old for c in first] == [None, None]
    assert tracker.merge({"a": job("a", ext={"queuePosition": 1})}) == []
    running = job("a", state="running", ext={"remoteSubstate": "TUNING_JOB_STATE_TUNING"})
    [change] = tracker.merge({"a": running})
    assert change == Change(job("a", ext={"queuePosition": 1}), running)
    tracker.merge({"b": job("b", state="cancelled"), "a": job("a", state="succeeded")})
    assert tracker.ended == ["b", "a"]
    line = tracker.lines([change], NOW)[0]
    assert line.endswith("  a  queued -> running/tuning")
    tracker.merge({"c": job("c", state="failed")})
    tracker.forget_ended(2)
    assert tracker.ended == ["a", "c"] and set(tracker.known) == {"a", "c"}


@pytest.mark.parametrize(("states", "code"), [
    (["succeeded", "succeeded"], 0), (["succeeded", "cancelled"], EXIT_CANCELLED),
    (["cancelled", "failed", "succeeded"], EXIT_FAILED)])
def test_wait_outcome_codes(states: list[str], code: int) -> None:
    """wait exits 0 when all succeeded, else by the worst outcome: failed before cancelled."""
    assert outcome([job(state=s) for s in states]) == code
