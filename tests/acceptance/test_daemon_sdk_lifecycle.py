"""Acceptance: the Vertex AI SDK's documented loop (`sft.train`, then `job.refresh()` until it
ends) and `rebase_tuned_model` through a real `tuningd serve` with the emulator behind it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import vertexai
from google.auth.credentials import AnonymousCredentials
from helpers import (
    BASE_MODEL,
    EXAMPLES,
    LOCATION,
    PROJECT,
    DaemonProc,
    EmulatorProc,
    Processes,
    http,
    job_id_of,
    ok_json,
    remote_jobs_by_label,
    wait_until,
)
from vertexai.preview.tuning import sft as preview_sft
from vertexai.tuning import sft

pytestmark = [pytest.mark.acceptance, pytest.mark.contract]

GOOD_LINES = (EXAMPLES / "train-sample.jsonl").read_text().splitlines()[:4]
MAX_STEPS = 40


@dataclass
class World:
    """An emulator on a manual clock (with a fake GCS root) and a daemon in front of it."""

    emu: EmulatorProc
    daemon: DaemonProc
    gcs: Path

    def dataset(self, name: str, text: str) -> str:
        (self.gcs / "bkt" / name).write_text(text)
        return f"gs://bkt/{name}"

    def advance(self, seconds: float) -> None:
        ok_json(http("POST", self.emu.url + "/emulator/advance", body={"seconds": seconds}))

    def remote(self, job_id: str) -> dict[str, Any] | None:
        found = remote_jobs_by_label(self.emu.state()).get(job_id, [])
        return found[0] if found else None

    def synced(self, job_id: str) -> bool:
        """Whether tuningd has polled the remote job's current state."""
        remote = self.remote(job_id)
        if remote is None:
            return False
        ext = self.daemon.job(job_id)["tuningd"]
        return bool(ext.get("remoteState") == remote["state"])

    def step(self, job_id: str, seconds: float = 2.0) -> Callable[[], None]:
        """One tick of the world: the remote clock moves, then tuningd catches up with it."""
        def run() -> None:
            self.advance(seconds)
            wait_until(lambda: self.synced(job_id), 20,
                       message=lambda: f"tuningd to poll {job_id}: {self.daemon.job(job_id)}")
        return run


@pytest.fixture
def world(procs: Processes, tmp_path: Path) -> Iterator[World]:
    """The world, with the Vertex AI SDK pointed at the daemon (REST, anonymous)."""
    gcs = tmp_path / "gcs"
    (gcs / "bkt").mkdir(parents=True)
    emu = procs.emulator(pending_seconds=1, job_seconds=10,
                         extra=["--manual-clock", "--gcs-root", str(gcs), "--seed", "7",
                                "--cancel-seconds", "1"])
    daemon = procs.daemon(emu.url)
    vertexai.init(project=PROJECT, location=LOCATION, api_endpoint=daemon.url,
                  api_transport="rest", credentials=AnonymousCredentials())
    yield World(emu, daemon, gcs)


def train(world: World, dataset: str) -> Any:
    job = sft.train(source_model=BASE_MODEL, train_dataset=dataset, epochs=2,
                    tuned_model_display_name="through-tuningd")
    job_id = job_id_of({"name": job.resource_name})
    assert job.resource_name == f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/{job_id}"
    wait_until(lambda: world.synced(job_id), 20, message="the job to be created on Vertex")
    return job


def refresh_until_ended(job: Any, step: Callable[[], None]) -> list[str]:
    """The SDK's documented loop, with the world ticking between refreshes; the states seen."""
    seen = []
    for _ in range(MAX_STEPS):
        if job.has_ended:
            return seen
        step()
        job.refresh()
        seen.append(job.state.name)
    raise AssertionError(f"the job did not end within {MAX_STEPS} steps: {seen}")


def test_refresh_loop_until_succeeded(world: World) -> None:
    """train, then refresh until SUCCEEDED: every refresh (which reads the job's experiment
    through the pass-through) works, and the tuned model and endpoint are readable."""
    job = train(world, world.dataset("train.jsonl", "\n".join(GOOD_LINES) + "\n"))
    job_id = job_id_of({"name": job.resource_name})
    seen = refresh_until_ended(job, world.step(job_id))
    assert "JOB_STATE_RUNNING" in seen and seen[-1] == "JOB_STATE_SUCCEEDED"
    assert job.has_succeeded
    experiment = job.experiment
    assert experiment is not None and experiment.name.startswith("tuning-experiment-")
    counts = world.emu.state()["requestCounts"]
    assert counts["experiment"].get("200", 0) >= 2
    from google.cloud import aiplatform
    model = aiplatform.Model(job.tuned_model_name)
    assert model.display_name == "through-tuningd"
    endpoint = aiplatform.Endpoint(job.tuned_model_endpoint_name)
    assert endpoint.resource_name == job.tuned_model_endpoint_name


def test_refresh_loop_until_failed(world: World) -> None:
    """A job whose dataset Vertex cannot read ends FAILED through the same loop, with the
    dataset error, and no refresh raises on the way."""
    job = train(world, world.dataset("bad.jsonl", "{oops\n"))
    job_id = job_id_of({"name": job.resource_name})
    seen = refresh_until_ended(job, world.step(job_id))
    assert seen[-1] == "JOB_STATE_FAILED"
    assert job.error.code == 3 and "line 1" in job.error.message
    assert job.experiment is not None


def test_refresh_loop_cancelled_midway(world: World) -> None:
    """A running job cancelled with job.cancel() ends CANCELLED (error code 1) through the loop."""
    job = train(world, world.dataset("train.jsonl", "\n".join(GOOD_LINES) + "\n"))
    job_id = job_id_of({"name": job.resource_name})
    step = world.step(job_id)
    while job.state.name != "JOB_STATE_RUNNING":
        step()
        job.refresh()
    assert job.experiment is not None
    job.cancel()
    wait_until(lambda: (world.remote(job_id) or {}).get("cancelRequested"), 20,
               message="the cancel to reach Vertex")
    seen = refresh_until_ended(job, step)
    assert seen[-1] == "JOB_STATE_CANCELLED"
    assert job.error.code == 1


def test_rebase_tuned_model(world: World) -> None:
    """preview sft.rebase_tuned_model on a succeeded tuningd job: the reference is mapped to the
    remote job, the LRO is polled (under /ui/) through the pass-through and answers the new
    TuningJob that Vertex created."""
    job = train(world, world.dataset("train.jsonl", "\n".join(GOOD_LINES) + "\n"))
    job_id = job_id_of({"name": job.resource_name})
    refresh_until_ended(job, world.step(job_id))
    remote_name = world.daemon.job(job_id)["tuningd"]["remoteName"]
    rebased = preview_sft.rebase_tuned_model(job.resource_name,
                                             artifact_destination="gs://bkt/rebased")
    jobs = world.emu.state()["jobs"]
    assert [j["name"] for j in jobs] == [remote_name, rebased.resource_name]
    assert jobs[1]["request"]["baseModel"] == BASE_MODEL
    assert rebased.state.name == "JOB_STATE_PENDING"
