"""Acceptance: many jobs through the real daemon and the real emulator, within the limits."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    LOCATION,
    PROJECT,
    Processes,
    job_body,
    job_id_of,
    remote_jobs_by_label,
    wait_until,
)

pytestmark = pytest.mark.acceptance

N_JOBS = 30
N_VIA_GENAI = 5


def _genai_client(daemon_url: str) -> Any:
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    return genai.Client(
        vertexai=True, project=PROJECT, location=LOCATION,
        credentials=google.oauth2.credentials.Credentials(token="x"),
        http_options=types.HttpOptions(base_url=daemon_url, api_version="v1"),
    )


def test_thirty_jobs_all_succeed_within_the_concurrency_limit(procs: Processes,
                                                              tmp_path: Path) -> None:
    """30 jobs submitted over HTTP and the genai SDK all succeed, never more than 2 are active on
    Vertex, each has exactly one remote job, and the SDK sees the tuned model."""
    from google.genai import types

    emu = procs.emulator(job_seconds=0.4, pending_seconds=0.1, max_concurrent=2,
                         extra=["--quota-mode", "wait", "--seed", "1"])
    daemon = procs.daemon(emu.url, {"limits": {"max_active": 2}})
    client = _genai_client(daemon.url)
    started = time.monotonic()

    ids: list[str] = []
    for i in range(N_JOBS - N_VIA_GENAI):
        job = daemon.submit(job_body(f"acc-{i}"))
        assert job["state"] == "JOB_STATE_QUEUED"
        assert job["name"].startswith(f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/")
        ids.append(job_id_of(job))
    for i in range(N_VIA_GENAI):
        tuned = client.tunings.tune(
            base_model="gemini-2.5-flash",
            training_dataset=types.TuningDataset(gcs_uri="gs://acc-bucket/train.jsonl"),
            config=types.CreateTuningJobConfig(tuned_model_display_name=f"sdk-{i}"),
        )
        assert tuned.state == types.JobState.JOB_STATE_QUEUED
        ids.append(tuned.name.rsplit("/", 1)[-1])
    assert len(set(ids)) == N_JOBS

    def all_succeeded() -> bool:
        states = daemon.states(ids)
        assert "JOB_STATE_FAILED" not in states.values(), states
        return len(states) == N_JOBS and all(s == "JOB_STATE_SUCCEEDED"
                                             for s in states.values())

    wait_until(all_succeeded, 120, interval_s=0.5,
               message=lambda: f"all jobs to succeed: {daemon.states(ids)}\n{procs.dump()}")
    wall_s = time.monotonic() - started

    state = emu.state()
    assert state["maxActive"] <= 2, state["maxActive"]
    by_label = remote_jobs_by_label(state)
    assert sorted(by_label) == sorted(ids)
    assert all(len(remotes) == 1 for remotes in by_label.values())
    assert len(state["jobs"]) == N_JOBS
    assert all(j["state"] == "JOB_STATE_SUCCEEDED" for j in state["jobs"])
    for remote in state["jobs"]:
        assert remote["request"]["labels"]["tuningd-managed"] == "true"

    for job_id in (ids[0], ids[-1]):  # one plain-HTTP job, one SDK job
        seen = client.tunings.get(name=f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/"
                                       f"{job_id}")
        assert seen.state == types.JobState.JOB_STATE_SUCCEEDED
        assert seen.tuned_model is not None
        assert seen.tuned_model.model.startswith("projects/")

    figures = {"jobs": N_JOBS, "wall_s": round(wall_s, 2), "remote_creates": len(state["jobs"]),
               "max_active_seen": state["maxActive"], "requests": state["requestCounts"]}
    print("\nscenario 1 figures:", json.dumps(figures))
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2))
