"""Every tuning kind through the emulator over HTTP: validation, lifecycle, outputs and cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tuningd.emulator import Emulator, EmulatorConfig, ManualClock

PARENT = "projects/my-proj/locations/us-central1"
TRAIN = "gs://my-bucket/train.jsonl"
BASE = "gemini-2.5-flash"

# One minimal valid create body per kind, as google-genai or the Vertex docs shape them.
KIND_BODIES: dict[str, dict[str, Any]] = {
    "supervisedTuningSpec": {"baseModel": BASE,
                             "supervisedTuningSpec": {"trainingDatasetUri": TRAIN}},
    "preferenceOptimizationSpec": {
        "baseModel": BASE,
        "preferenceOptimizationSpec": {"trainingDatasetUri": TRAIN,
                                       "hyperParameters": {"beta": 0.5}}},
    "distillationSpec": {
        "baseModel": BASE,
        "distillationSpec": {"promptDatasetUri": TRAIN, "baseTeacherModel": "gemini-2.5-pro"}},
    "reinforcementTuningSpec": {
        "baseModel": BASE,
        "reinforcementTuningSpec": {
            "trainingDatasetUri": TRAIN, "hyperParameters": {"stepCount": "12"},
            "singleRewardConfig": {"rewardName": "r", "codeExecutionRewardScorer": {
                "pythonCodeSnippet": "def evaluate(e, r): return 1.0"}}}},
    "fullFineTuningSpec": {"baseModel": BASE, "fullFineTuningSpec": {"trainingDatasetUri": TRAIN}},
    "partnerModelTuningSpec": {
        "baseModel": BASE,
        "partnerModelTuningSpec": {"trainingDatasetUri": TRAIN,
                                   "hyperParameters": {"learning_rate": 0.1}}},
    "veoTuningSpec": {"baseModel": BASE, "veoTuningSpec": {"trainingDatasetUri": TRAIN}},
    "veoLoraTuningSpec": {"baseModel": BASE, "veoLoraTuningSpec": {"trainingDatasetUri": TRAIN}},
}
# The TuningDataStats member each kind's proto defines (None: the proto has none).
STATS_OF = {
    "supervisedTuningSpec": "supervisedTuningDataStats",
    "fullFineTuningSpec": "supervisedTuningDataStats",
    "preferenceOptimizationSpec": "preferenceOptimizationDataStats",
    "distillationSpec": "distillationDataStats",
    "reinforcementTuningSpec": "reinforcementTuningDataStats",
    "partnerModelTuningSpec": None, "veoTuningSpec": None, "veoLoraTuningSpec": None,
}


@pytest.fixture
async def emu() -> AsyncIterator[tuple[Emulator, ManualClock, aiohttp.ClientSession]]:
    clock = ManualClock()
    config = EmulatorConfig(pending_seconds=5, job_seconds=100, cancel_seconds=2, seed=3)
    async with Emulator(config, clock=clock) as emulator, aiohttp.ClientSession() as http:
        yield emulator, clock, http


async def _call(http: aiohttp.ClientSession, method: str, url: str,
                body: Any = None) -> tuple[int, dict[str, Any]]:
    async with http.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("kind", list(KIND_BODIES))
async def test_each_kind_runs_to_success_with_its_outputs(
        emu: tuple[Emulator, ManualClock, aiohttp.ClientSession], kind: str) -> None:
    """Each kind is accepted at v1beta1, passes the sub-states, succeeds with a tuned model and
    the proto's stats member for that kind, and keeps its spec (resolved hyperparameters in
    that spec, never in supervisedTuningSpec)."""
    emulator, clock, http = emu
    status, job = await _call(http, "POST", f"{emulator.url}/v1beta1/{PARENT}/tuningJobs",
                              KIND_BODIES[kind])
    assert status == 200, job
    clock.advance(5 + 10)
    _, running = await _call(http, "GET", f"{emulator.url}/v1beta1/{job['name']}")
    assert running["state"] == "JOB_STATE_RUNNING"
    assert running["tuningJobState"].startswith("TUNING_JOB_STATE_")
    clock.advance(200)
    _, done = await _call(http, "GET", f"{emulator.url}/v1beta1/{job['name']}")
    assert done["state"] == "JOB_STATE_SUCCEEDED"
    assert done["tunedModel"]["model"].startswith(f"projects/{emulator.config.project_number}/")
    assert kind in done and "supervisedTuningSpec" not in [k for k in done if k != kind]
    for key, value in KIND_BODIES[kind][kind].items():
        if key != "hyperParameters":
            assert done[kind][key] == value
    stats = STATS_OF[kind]
    if stats is None:
        assert "tuningDataStats" not in done
    else:
        assert list(done["tuningDataStats"]) == [stats]
    if kind == "reinforcementTuningSpec":
        assert done[kind]["hyperParameters"]["stepCount"] == "12"
        assert "epochCount" not in done[kind]["hyperParameters"]


@pytest.mark.parametrize("kind", ["preferenceOptimizationSpec", "distillationSpec",
                                  "veoTuningSpec"])
async def test_each_kind_cancels(emu: tuple[Emulator, ManualClock, aiohttp.ClientSession],
                                 kind: str) -> None:
    """A running job of another kind cancels like a supervised one."""
    emulator, clock, http = emu
    _, job = await _call(http, "POST", f"{emulator.url}/v1beta1/{PARENT}/tuningJobs",
                         KIND_BODIES[kind])
    clock.advance(20)
    status, _ = await _call(http, "POST", f"{emulator.url}/v1beta1/{job['name']}:cancel", {})
    assert status == 200
    clock.advance(5)
    _, done = await _call(http, "GET", f"{emulator.url}/v1beta1/{job['name']}")
    assert done["state"] == "JOB_STATE_CANCELLED"
    assert "tunedModel" not in done


async def test_v1_refuses_beta_kinds_and_accepts_preference(
        emu: tuple[Emulator, ManualClock, aiohttp.ClientSession]) -> None:
    """At v1, distillation is an unknown name (Vertex's own 400); preference tuning is a v1
    field and is accepted."""
    emulator, _, http = emu
    status, err = await _call(http, "POST", f"{emulator.url}/v1/{PARENT}/tuningJobs",
                              KIND_BODIES["distillationSpec"])
    assert status == 400
    assert err["error"]["message"] == ('Invalid JSON payload received. Unknown name '
                                       '"distillationSpec" at \'tuning_job\': Cannot find field.')
    status, job = await _call(http, "POST", f"{emulator.url}/v1/{PARENT}/tuningJobs",
                              KIND_BODIES["preferenceOptimizationSpec"])
    assert status == 200, job
    assert job["preferenceOptimizationSpec"]["hyperParameters"]["beta"] == 0.5


@pytest.mark.parametrize(("body", "fragment"), [
    ({"baseModel": BASE}, "supervised_tuning_spec is required (or another tuning spec"),
    ({"baseModel": BASE, "supervisedTuningSpec": {"trainingDatasetUri": TRAIN},
      "preferenceOptimizationSpec": {"trainingDatasetUri": TRAIN}},
     "Only one of supervised_tuning_spec and preference_optimization_spec"),
    ({"baseModel": BASE, "preferenceOptimizationSpec": {}},
     "preference_optimization_spec.training_dataset_uri is required"),
    ({"baseModel": BASE, "distillationSpec": {"promptDatasetUri": TRAIN}},
     "base_teacher_model or distillation_spec.tuned_teacher_model_source must be set"),
    ({"baseModel": BASE, "reinforcementTuningSpec": {"trainingDatasetUri": TRAIN}},
     "single_reward_config and"),
    ({"baseModel": BASE, "reinforcementTuningSpec": {
        "trainingDatasetUri": TRAIN, "hyperParameters": {"epochCount": 1, "stepCount": 2},
        "singleRewardConfig": {"rewardName": "r"}}},
     "epoch_count and step_count cannot be set at the same time"),
    ({"customBaseModel": "gs://b/weights", "supervisedTuningSpec": {"trainingDatasetUri": TRAIN}},
     "base_model or pre_tuned_model must be set"),
    ({"baseModel": BASE, "customBaseModel": "s3://w",
      "supervisedTuningSpec": {"trainingDatasetUri": TRAIN}}, "Invalid custom_base_model"),
    ({"baseModel": BASE, "outputUri": "/tmp/x",
      "supervisedTuningSpec": {"trainingDatasetUri": TRAIN}}, "Invalid output_uri"),
    ({"baseModel": BASE, "veoTuningSpec": {"trainingDatasetUri": TRAIN,
                                           "hyperParameters": {"veoDataMixtureRatio": 2}}},
     "Invalid veo_data_mixture_ratio"),
])
async def test_kind_validation_errors(emu: tuple[Emulator, ManualClock, aiohttp.ClientSession],
                                      body: dict[str, Any], fragment: str) -> None:
    """Each kind's create-time rule answers 400 INVALID_ARGUMENT in Google's envelope."""
    emulator, _, http = emu
    status, err = await _call(http, "POST", f"{emulator.url}/v1beta1/{PARENT}/tuningJobs", body)
    assert status == 400
    assert err["error"]["status"] == "INVALID_ARGUMENT"
    assert fragment in err["error"]["message"]


async def test_continuous_tuning_fills_pre_tuned_base_model(
        emu: tuple[Emulator, ManualClock, aiohttp.ClientSession]) -> None:
    """A job tuning a model an earlier job produced shows preTunedModel.baseModel (output only)
    as that job's base model; a model no job produced is 404."""
    emulator, clock, http = emu
    _, first = await _call(http, "POST", f"{emulator.url}/v1/{PARENT}/tuningJobs",
                           KIND_BODIES["supervisedTuningSpec"])
    clock.advance(300)
    _, first = await _call(http, "GET", f"{emulator.url}/v1/{first['name']}")
    model = first["tunedModel"]["model"]
    body = {"preTunedModel": {"tunedModelName": model, "baseModel": "ignored-output-only"},
            "supervisedTuningSpec": {"trainingDatasetUri": TRAIN}}
    status, second = await _call(http, "POST", f"{emulator.url}/v1/{PARENT}/tuningJobs", body)
    assert status == 200, second
    assert second["preTunedModel"] == {"tunedModelName": model, "baseModel": BASE}
    clock.advance(300)
    _, second = await _call(http, "GET", f"{emulator.url}/v1/{second['name']}")
    assert second["state"] == "JOB_STATE_SUCCEEDED"
    missing = {"preTunedModel": {"tunedModelName": f"{PARENT}/models/404"},
               "supervisedTuningSpec": {"trainingDatasetUri": TRAIN}}
    status, err = await _call(http, "POST", f"{emulator.url}/v1/{PARENT}/tuningJobs", missing)
    assert status == 404
    assert err["error"]["status"] == "NOT_FOUND"
