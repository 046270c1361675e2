"""Acceptance: google-genai `tunings.tune` with preference tuning and with distillation, through a
real `tuningd serve` at the client's default version (v1beta1), to the emulator's terminal state."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from google import genai
from google.genai import types
from google.oauth2.credentials import Credentials
from helpers import (
    BASE_MODEL,
    LOCATION,
    PROJECT,
    DaemonProc,
    EmulatorProc,
    Processes,
    http,
    ok_json,
    remote_jobs_by_label,
    wait_until,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.contract,
              pytest.mark.filterwarnings("ignore:The SDK's tuning implementation is experimental")]

TRAIN = "gs://bkt/kinds/train.jsonl"
VALIDATION = "gs://bkt/kinds/validation.jsonl"
TEACHER = "gemini-2.5-pro"
MAX_STEPS = 40


@dataclass
class World:
    """An emulator on a manual clock (datasets synthesised) and a daemon in front of it."""

    emu: EmulatorProc
    daemon: DaemonProc
    client: genai.Client

    def remote(self, job_id: str) -> dict[str, Any] | None:
        found = remote_jobs_by_label(self.emu.state()).get(job_id, [])
        return found[0] if found else None

    def synced(self, job_id: str) -> bool:
        """Whether tuningd has polled the remote job's current state."""
        remote = self.remote(job_id)
        ext = self.daemon.job(job_id)["tuningd"]
        return remote is not None and ext.get("remoteState") == remote["state"]

    def run_to_end(self, job: types.TuningJob) -> types.TuningJob:
        """Tick the emulator's clock, letting tuningd catch up each time, until the job (read
        through tuningd with the client) has ended."""
        assert job.name is not None
        job_id = job.name.rsplit("/", 1)[-1]
        wait_until(lambda: self.remote(job_id) is not None, 20,
                   message=lambda: f"the job to be created on Vertex: {self.daemon.job(job_id)}")
        for _ in range(MAX_STEPS):
            wait_until(lambda: self.synced(job_id), 20,
                       message=lambda: f"tuningd to poll {job_id}: {self.daemon.job(job_id)}")
            job = self.client.tunings.get(name=job.name)
            if job.has_ended:
                return job
            ok_json(http("POST", self.emu.url + "/emulator/advance", body={"seconds": 3}))
        raise AssertionError(f"the job did not end within {MAX_STEPS} steps: {job.state}")


@pytest.fixture
def world(procs: Processes) -> Iterator[World]:
    """The world, with a google-genai client at its default API version pointed at tuningd."""
    emu = procs.emulator(pending_seconds=1, job_seconds=10, extra=["--manual-clock"])
    daemon = procs.daemon(emu.url)
    client = genai.Client(
        vertexai=True, project=PROJECT, location=LOCATION,
        credentials=Credentials(token="unused"),  # type: ignore[no-untyped-call]
        http_options=types.HttpOptions(base_url=daemon.url))
    yield World(emu, daemon, client)


def _check_end(world: World, job: types.TuningJob, spec_key: str) -> dict[str, Any]:
    """The job ended as the emulator ended it; the remote job was created at v1beta1."""
    ended = world.run_to_end(job)
    assert ended.name is not None
    remote = world.remote(ended.name.rsplit("/", 1)[-1])
    assert remote is not None
    assert remote["apiVersion"] == "v1beta1"
    assert ended.state is not None and ended.state.value == remote["state"]
    assert ended.has_succeeded, ended.error
    assert spec_key in remote["job"]
    request: dict[str, Any] = remote["request"]
    return request


def test_preference_tuning_through_tuningd(world: World) -> None:
    """tune(method=PREFERENCE_TUNING) reaches the emulator with its preferenceOptimizationSpec
    intact (dataset, validation set, beta, epochs) and ends SUCCEEDED as the emulator ends it."""
    job = world.client.tunings.tune(
        base_model=BASE_MODEL,
        training_dataset=types.TuningDataset(gcs_uri=TRAIN),
        config=types.CreateTuningJobConfig(
            method=types.TuningMethod.PREFERENCE_TUNING, tuned_model_display_name="prefs",
            validation_dataset=types.TuningValidationDataset(gcs_uri=VALIDATION),
            epoch_count=2, beta=0.25))
    request = _check_end(world, job, "preferenceOptimizationSpec")
    spec = request["preferenceOptimizationSpec"]
    assert spec["trainingDatasetUri"] == TRAIN
    assert spec["validationDatasetUri"] == VALIDATION
    assert spec["hyperParameters"]["beta"] == 0.25
    assert int(spec["hyperParameters"]["epochCount"]) == 2
    assert "supervisedTuningSpec" not in request


def test_distillation_through_tuningd(world: World) -> None:
    """tune(method=DISTILLATION) with a teacher model reaches the emulator with its
    distillationSpec intact (prompt dataset, teacher, loss weight) and ends SUCCEEDED."""
    job = world.client.tunings.tune(
        base_model=BASE_MODEL,
        training_dataset=types.TuningDataset(gcs_uri=TRAIN),
        config=types.CreateTuningJobConfig(
            method=types.TuningMethod.DISTILLATION, tuned_model_display_name="distilled",
            base_teacher_model=TEACHER, sft_loss_weight_multiplier=0.5, epoch_count=1))
    request = _check_end(world, job, "distillationSpec")
    spec = request["distillationSpec"]
    assert spec["promptDatasetUri"] == TRAIN
    assert spec["baseTeacherModel"] == TEACHER
    assert spec["hyperParameters"]["sftLossWeightMultiplier"] == 0.5
    assert "supervisedTuningSpec" not in request

