"""Acceptance: google-genai preference tuning at v1 through `tuningd serve` (v1beta1 and
distillation: test_daemon_genai_kinds.py)."""

from __future__ import annotations

from typing import Any

import pytest
from google import genai
from google.genai import types
from google.oauth2.credentials import Credentials
from helpers import (
    LOCATION,
    PROJECT,
    DaemonProc,
    Processes,
    job_id_of,
    remote_jobs_by_label,
    wait_until,
)

pytestmark = [pytest.mark.acceptance,
              pytest.mark.filterwarnings("ignore:The SDK's tuning implementation is experimental")]

TRAIN = "gs://my-bucket/train.jsonl"


def _client(daemon: DaemonProc, api_version: str) -> genai.Client:
    return genai.Client(
        vertexai=True, project=PROJECT, location=LOCATION,
        credentials=Credentials(token="x"),  # type: ignore[no-untyped-call]
        http_options=types.HttpOptions(base_url=daemon.url, api_version=api_version))


def _tune_to_end(client: genai.Client, **config: Any) -> types.TuningJob:
    job = client.tunings.tune(
        base_model="gemini-2.5-flash", training_dataset=types.TuningDataset(gcs_uri=TRAIN),
        config=types.CreateTuningJobConfig(tuned_model_display_name="kinds", **config))
    assert job.name is not None

    def ended() -> types.TuningJob | None:
        got = client.tunings.get(name=str(job.name))
        return got if got.has_ended else None

    return wait_until(ended, 60, interval_s=0.2, message="the tuning job to end")


def test_preference_tuning_at_v1_runs_through_the_daemon(procs: Processes) -> None:
    """tunings.tune(method=PREFERENCE_TUNING) is accepted (it was `Unknown name
    "preferenceOptimizationSpec"`), reaches the emulator with its spec, and succeeds."""
    emu = procs.emulator(job_seconds=1.0, pending_seconds=0.2)
    daemon = procs.daemon(emu.url)
    done = _tune_to_end(_client(daemon, "v1"), method="PREFERENCE_TUNING", beta=0.5,
                        epoch_count=2)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED, daemon.tail()
    assert done.tuned_model is not None and done.tuned_model.model
    [remote] = remote_jobs_by_label(emu.state())[job_id_of(done.model_dump())]
    spec = remote["request"]["preferenceOptimizationSpec"]
    assert spec["trainingDatasetUri"] == TRAIN
    assert spec["hyperParameters"]["beta"] == 0.5
    assert "supervisedTuningSpec" not in remote["request"]
