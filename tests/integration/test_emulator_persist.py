"""The emulator's state directory: jobs survive a restart exactly, replay by the clock, the file
is replaced atomically (also under kill -9) and one directory serves one emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tuningd.emulator import Emulator, EmulatorConfig, ManualClock
from tuningd.emulator.persist import STATE_FILE_NAME, EmulatorStateError, PersistentState
from tuningd.vertex.wire import parse_timestamp

BODY: dict[str, Any] = {
    "baseModel": "gemini-2.5-flash",
    "labels": {"managed-by": "tuningd"},
    "supervisedTuningSpec": {"trainingDatasetUri": "gs://my-bucket/sft/train.jsonl"},
}
WHERE = {"api_version": "v1", "project": "my-proj", "location": "us-central1"}
CONFIG = EmulatorConfig(pending_seconds=5, job_seconds=100, cancel_seconds=30, max_concurrent=2,
                        seed=3)


def comparable(state: PersistentState) -> dict[str, Any]:
    """A snapshot without what a restart resets on purpose (request counts, tokens)."""
    snap = state.snapshot()
    for key in ("requestCounts", "tokensIssued"):
        snap.pop(key)
    return snap


def busy_state(state_dir: Path) -> tuple[PersistentState, ManualClock]:
    """Jobs in every kind of place: ended, cancelling, running, pending, waiting for quota,
    and a late create that has not landed."""
    clock = ManualClock()
    state = PersistentState(state_dir, CONFIG, clock)
    state.open()
    first = state.create(BODY, **WHERE)
    clock.advance(1)
    second = state.create(BODY, **WHERE)
    clock.advance(10)
    state.create(BODY, **WHERE)  # waits for quota behind the two
    state.cancel("us-central1", second.job_id)  # cancelling for 30 s
    clock.advance(100)  # the first succeeded, the waiting one got its slot
    state.create(BODY, **WHERE)
    spec = state.validate_create(BODY, api_version="v1")
    state.schedule_create(spec, BODY, received_s=clock.now(), land_s=clock.now() + 50,
                          **WHERE)
    assert state.get("us-central1", first.job_id).ended
    return state, clock


def test_a_restart_restores_every_job_and_continues_the_same_lifecycle(tmp_path: Path) -> None:
    """A reloaded emulator shows what the old one showed and then changes exactly as the old one
    would have, at every step (quota hand-over, cancel ending, late create landing)."""
    old, old_clock = busy_state(tmp_path)
    old.close()
    new_clock = ManualClock()
    new = PersistentState(tmp_path, CONFIG, new_clock)
    new.open()
    assert new_clock.now() == old_clock.now()  # a manual clock resumes where the file was saved
    assert comparable(new) == comparable(old)
    assert new.view_at(new.jobs[next(iter(new.jobs))], old_clock.now() - 100) == old.view_at(
        old.jobs[next(iter(old.jobs))], old_clock.now() - 100)  # lagged lists see the past
    for step_s in (4, 20, 30, 60, 100, 200):
        old_clock.advance(step_s)
        new_clock.advance(step_s)
        assert comparable(new) == comparable(old)
    assert all(job["state"] == "JOB_STATE_SUCCEEDED" or job["cancelRequested"]
               for job in new.snapshot()["jobs"])
    new.close()


def test_jobs_end_while_stopped_at_the_instants_they_were_due(tmp_path: Path) -> None:
    """Time that passed while the emulator was down is replayed: a job due to end then has
    ended, with the end time it was due at, not the time of the restart."""
    clock = ManualClock()
    state = PersistentState(tmp_path, CONFIG, clock)
    state.open()
    job = state.create(BODY, **WHERE)
    clock.advance(20)
    assert state.view(state.get("us-central1", job.job_id))["state"] == "JOB_STATE_RUNNING"
    state.close()
    later = ManualClock(clock.now() + 1000)
    again = PersistentState(tmp_path, CONFIG, later)
    again.open()
    shown = again.view(again.get("us-central1", job.job_id))
    assert shown["state"] == "JOB_STATE_SUCCEEDED"
    assert parse_timestamp(shown["endTime"]) == job.create_s + 5 + 100
    again.close()


def test_every_change_is_saved_before_the_call_returns(tmp_path: Path) -> None:
    """The file already holds a job when create returns, and a cancel when cancel returns."""
    state = PersistentState(tmp_path, CONFIG, ManualClock())
    state.open()
    job = state.create(BODY, **WHERE)
    saved = json.loads((tmp_path / STATE_FILE_NAME).read_text())
    assert [j["jobId"] for j in saved["jobs"]] == [job.job_id]
    state.cancel("us-central1", job.job_id)
    saved = json.loads((tmp_path / STATE_FILE_NAME).read_text())
    assert saved["jobs"][0]["cancelS"] is not None
    state.close()


def test_one_directory_serves_one_emulator(tmp_path: Path) -> None:
    """A second emulator on a directory in use is refused, and may use it once the first
    closed."""
    first = PersistentState(tmp_path, CONFIG, ManualClock())
    first.open()
    second = PersistentState(tmp_path, CONFIG, ManualClock())
    with pytest.raises(EmulatorStateError, match="another running emulator"):
        second.open()
    first.close()
    second.open()
    second.close()


@pytest.mark.parametrize(("content", "problem"), [
    ("{\"version\": 1, \"jobs\": [", "not valid JSON"),
    ("{\"version\": 99}", "not a version 1"),
    ("{\"version\": 1, \"jobs\": [{}]}", "malformed"),
])
def test_an_unreadable_file_stops_the_start_and_says_why(tmp_path: Path, content: str,
                                                         problem: str) -> None:
    """A damaged state file is never silently replaced by an empty one."""
    (tmp_path / STATE_FILE_NAME).write_text(content)
    state = PersistentState(tmp_path, CONFIG, ManualClock())
    with pytest.raises(EmulatorStateError, match=problem):
        state.open()
    assert (tmp_path / STATE_FILE_NAME).read_text() == content
    state.close()


async def test_a_restarted_emulator_answers_for_its_jobs_over_http(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Through the HTTP front end: a job created before a restart is found after it."""
    clock = ManualClock()
    url_path = "v1/projects/my-proj/locations/us-central1/tuningJobs"
    async with Emulator(CONFIG, clock=clock, state_dir=tmp_path) as emu:
        resp = await http.post(f"{emu.url}/{url_path}", json=BODY)
        assert resp.status == 200
        name = (await resp.json())["name"]
    async with Emulator(CONFIG, clock=ManualClock(), state_dir=tmp_path) as emu:
        resp = await http.get(f"{emu.url}/v1/{name}")
        assert resp.status == 200
        assert (await resp.json())["state"] == "JOB_STATE_PENDING"


WRITER = """
import sys
from pathlib import Path
from tuningd.emulator.persist import write_atomically
path = Path(sys.argv[1])
i = 0
print("ready", flush=True)
while True:
    i += 1
    write_atomically(path, '{"n": %d, "pad": "%s"}' % (i, "x" * 2_000_000))
"""


def test_a_kill_mid_write_leaves_the_old_file_or_the_new_one(tmp_path: Path) -> None:
    """kill -9 at arbitrary moments of back-to-back 2 MB writes: the file always parses whole."""
    path = tmp_path / STATE_FILE_NAME
    seen: set[int] = set()
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(0.02 + attempt * 0.031)  # a kill at an arbitrary point of some write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if path.exists():
            data = json.loads(path.read_text())  # never a torn file
            assert len(data["pad"]) == 2_000_000
            seen.add(data["n"])
    assert seen, "no write ever completed"
