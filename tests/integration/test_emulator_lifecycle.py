"""Emulator job lifecycle on a manual clock: sub-states, outputs, cancellation and the quota."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import aiohttp
import structlog

from tuningd.emulator import Emulator, EmulatorConfig, ManualClock, QuotaMode
from tuningd.vertex.wire import parse_timestamp

PARENT = "projects/my-proj/locations/us-central1"
BODY: dict[str, Any] = {
    "baseModel": "gemini-2.5-flash",
    "labels": {"managed-by": "tuningd"},
    "supervisedTuningSpec": {"trainingDatasetUri": "gs://my-bucket/sft/train.jsonl"},
}
T0 = ManualClock.DEFAULT_START_S


def config(**overrides: Any) -> EmulatorConfig:
    values: dict[str, Any] = {"pending_seconds": 5, "job_seconds": 100, "cancel_seconds": 2,
                              "seed": 3}
    values.update(overrides)
    return EmulatorConfig(**values)


async def create(http: aiohttp.ClientSession, emu: Emulator, body: Any = None,
                 version: str = "v1beta1") -> tuple[int, dict[str, Any]]:
    async with http.post(f"{emu.url}/{version}/{PARENT}/tuningJobs",
                         json=body if body is not None else BODY) as resp:
        return resp.status, await resp.json()


async def get(http: aiohttp.ClientSession, emu: Emulator, name: str,
              version: str = "v1beta1") -> dict[str, Any]:
    async with http.get(f"{emu.url}/{version}/{name}") as resp:
        assert resp.status == 200
        result: dict[str, Any] = await resp.json()
        return result


async def cancel(http: aiohttp.ClientSession, emu: Emulator, name: str) -> int:
    async with http.post(f"{emu.url}/v1/{name}:cancel", json={}) as resp:
        return resp.status


def at(offset_s: float) -> float:
    return T0 + offset_s


async def test_full_lifecycle_with_substates_and_outputs(http: aiohttp.ClientSession) -> None:
    """PENDING -> RUNNING(PROCESSING_DATASET, WAITING_FOR_CAPACITY, TUNING, POST_PROCESSING) ->
    SUCCEEDED, with times, experiment, resolved hyperparameters, stats and tunedModel."""
    clock = ManualClock()
    async with Emulator(config(), clock=clock) as emu:
        _, job = await create(http, emu)
        name = job["name"]
        assert "tuningJobState" not in job  # a quota slot was free
        seen: list[tuple[str, str | None, str]] = []
        for step in (4.9, 0.1, 10, 10, 70, 9.9, 0.1):
            clock.advance(step)
            got = await get(http, emu, name)
            seen.append((got["state"], got.get("tuningJobState"), got["updateTime"]))
        assert [(s, sub) for s, sub, _ in seen] == [
            ("JOB_STATE_PENDING", None),
            ("JOB_STATE_RUNNING", "TUNING_JOB_STATE_PROCESSING_DATASET"),
            ("JOB_STATE_RUNNING", "TUNING_JOB_STATE_WAITING_FOR_CAPACITY"),
            ("JOB_STATE_RUNNING", "TUNING_JOB_STATE_TUNING"),
            ("JOB_STATE_RUNNING", "TUNING_JOB_STATE_POST_PROCESSING"),
            ("JOB_STATE_RUNNING", "TUNING_JOB_STATE_POST_PROCESSING"),
            ("JOB_STATE_SUCCEEDED", None),
        ]
        update_times = [parse_timestamp(u) for _, _, u in seen]
        assert update_times == [at(0), at(5), at(15), at(25), at(95), at(95), at(105)]
        done = await get(http, emu, name)
        assert parse_timestamp(done["startTime"]) == at(5)
        assert done["endTime"] == done["updateTime"]
        assert done["experiment"] == ("projects/123456789012/locations/us-central1/metadataStores/"
                                      "default/contexts/tuning-experiment-20250602101503000000")
        hyper = done["supervisedTuningSpec"]["hyperParameters"]
        assert set(hyper) == {"epochCount", "learningRateMultiplier", "adapterSize"}
        assert hyper["adapterSize"] == "ADAPTER_SIZE_FOUR"
        epochs = int(hyper["epochCount"])
        tuned = done["tunedModel"]
        assert re.fullmatch(r"projects/123456789012/locations/us-central1/models/\d{19}@1",
                            tuned["model"])
        assert re.fullmatch(r"projects/123456789012/locations/us-central1/endpoints/\d{19}",
                            tuned["endpoint"])
        assert [c["epoch"] for c in tuned["checkpoints"]] == [str(e) for e in
                                                               range(1, epochs + 1)]
        assert tuned["checkpoints"][-1]["endpoint"] == tuned["endpoint"]
        stats = done["tuningDataStats"]["supervisedTuningDataStats"]
        assert int(stats["tuningDatasetExampleCount"]) > 0
        assert int(stats["totalBillableCharacterCount"]) == (
            int(stats["totalTuningCharacterCount"]) * epochs)
        assert done["tuningJobMetadata"]["completedEpochCount"] == str(epochs)
        assert "error" not in done


async def test_hyperparameters_resolved_only_after_pending(http: aiohttp.ClientSession) -> None:
    """Unset hyperParameters are absent while PENDING and filled in once the job runs."""
    clock = ManualClock()
    async with Emulator(config(), clock=clock) as emu:
        _, job = await create(http, emu)
        assert "hyperParameters" not in job["supervisedTuningSpec"]
        clock.advance(5)
        running = await get(http, emu, job["name"])
        assert int(running["supervisedTuningSpec"]["hyperParameters"]["epochCount"]) >= 1


async def test_v1_omits_v1beta1_detail_fields(http: aiohttp.ClientSession) -> None:
    """v1 GETs show the RUNNING state without tuningJobState or tuningJobMetadata."""
    clock = ManualClock()
    async with Emulator(config(), clock=clock) as emu:
        _, job = await create(http, emu)
        clock.advance(50)
        v1 = await get(http, emu, job["name"], version="v1")
        beta = await get(http, emu, job["name"])
        assert v1["state"] == beta["state"] == "JOB_STATE_RUNNING"
        assert "tuningJobState" not in v1 and "tuningJobMetadata" not in v1
        assert beta["tuningJobState"] == "TUNING_JOB_STATE_TUNING"
        assert int(beta["tuningJobMetadata"]["completedStepCount"]) > 0


async def test_export_last_checkpoint_only_has_no_checkpoints(
        http: aiohttp.ClientSession) -> None:
    """exportLastCheckpointOnly=true yields a tunedModel without intermediate checkpoints."""
    body = copy.deepcopy(BODY)
    body["supervisedTuningSpec"]["exportLastCheckpointOnly"] = True
    clock = ManualClock()
    async with Emulator(config(), clock=clock) as emu:
        _, job = await create(http, emu, body)
        clock.advance(500)
        done = await get(http, emu, job["name"])
        assert done["state"] == "JOB_STATE_SUCCEEDED"
        assert set(done["tunedModel"]) == {"model", "endpoint"}


async def test_cancel_running_job(http: aiohttp.ClientSession) -> None:
    """Cancel during RUNNING: CANCELLING (no sub-state) then CANCELLED with error code 1."""
    clock = ManualClock()
    async with Emulator(config(), clock=clock) as emu:
        _, job = await create(http, emu)
        clock.advance(30)
        assert await cancel(http, emu, job["name"]) == 200
        cancelling = await get(http, emu, job["name"])
        assert cancelling["state"] == "JOB_STATE_CANCELLING"
        assert "tuningJobState" not in cancelling
        assert parse_timestamp(cancelling["updateTime"]) == at(30)
        clock.advance(2)
        done = await get(http, emu, job["name"])
        assert done["state"] == "JOB_STATE_CANCELLED"
        assert done["error"] == {"code": 1, "message": "Tuning job was cancelled."}
        assert parse_timestamp(done["endTime"]) == at(32)
        assert "tunedModel" not in done


async def test_cancel_completes_anyway(http: aiohttp.ClientSession) -> None:
    """With cancel_completes_probability=1 a cancelled job stays CANCELLING and then SUCCEEDS."""
    clock = ManualClock()
    async with Emulator(config(cancel_completes_probability=1.0), clock=clock) as emu:
        _, job = await create(http, emu)
        clock.advance(30)
        await cancel(http, emu, job["name"])
        clock.advance(50)
        assert (await get(http, emu, job["name"]))["state"] == "JOB_STATE_CANCELLING"
        clock.advance(50)
        done = await get(http, emu, job["name"])
        assert done["state"] == "JOB_STATE_SUCCEEDED"
        assert "tunedModel" in done and "error" not in done
        reasons = [t["reason"] for t in emu.state.snapshot()["jobs"][0]["transitions"]]
        assert reasons[-1] == "completed despite cancel"


async def test_quota_wait_mode_queues_fifo(http: aiohttp.ClientSession) -> None:
    """In wait mode extra jobs stay PENDING/WAITING_FOR_QUOTA and start in FIFO order."""
    clock = ManualClock()
    async with Emulator(config(max_concurrent=1), clock=clock) as emu:
        names = []
        for _ in range(3):
            status, job = await create(http, emu)
            assert status == 200
            names.append(job["name"])
        waiting = [await get(http, emu, n) for n in names]
        assert [j.get("tuningJobState") for j in waiting] == [
            None, "TUNING_JOB_STATE_WAITING_FOR_QUOTA", "TUNING_JOB_STATE_WAITING_FOR_QUOTA"]
        clock.advance(105)  # first ends at +105; second gets the slot then
        second = await get(http, emu, names[1])
        assert second["state"] == "JOB_STATE_PENDING" and "tuningJobState" not in second
        assert parse_timestamp(second["updateTime"]) == at(105)
        third = await get(http, emu, names[2])
        assert third["tuningJobState"] == "TUNING_JOB_STATE_WAITING_FOR_QUOTA"
        clock.advance(1000)  # chains: the second ends at +210, the third at +315
        jobs = [await get(http, emu, n) for n in names]
        assert [j["state"] for j in jobs] == ["JOB_STATE_SUCCEEDED"] * 3
        assert [parse_timestamp(j["endTime"]) for j in jobs] == [at(105), at(210), at(315)]
        assert emu.state.max_active == 1


async def test_cancel_waiting_job_leaves_queue(http: aiohttp.ClientSession) -> None:
    """Cancelling a job waiting for quota cancels it without ever taking a slot."""
    clock = ManualClock()
    async with Emulator(config(max_concurrent=1), clock=clock) as emu:
        _, first = await create(http, emu)
        _, second = await create(http, emu)
        _, third = await create(http, emu)
        await cancel(http, emu, second["name"])
        clock.advance(2)
        assert (await get(http, emu, second["name"]))["state"] == "JOB_STATE_CANCELLED"
        clock.advance(103)
        assert (await get(http, emu, first["name"]))["state"] == "JOB_STATE_SUCCEEDED"
        third_now = await get(http, emu, third["name"])
        assert third_now["state"] == "JOB_STATE_PENDING"
        assert "tuningJobState" not in third_now
        assert emu.state.max_active == 1


async def test_max_concurrent_two_runs_two(http: aiohttp.ClientSession) -> None:
    """With max_concurrent=2 two jobs run side by side and maxActive reports 2."""
    clock = ManualClock()
    async with Emulator(config(max_concurrent=2), clock=clock) as emu:
        names = [(await create(http, emu))[1]["name"] for _ in range(3)]
        clock.advance(6)
        states = [(await get(http, emu, n))["state"] for n in names]
        assert states == ["JOB_STATE_RUNNING", "JOB_STATE_RUNNING", "JOB_STATE_PENDING"]
        assert emu.state.max_active == 2


async def test_quota_reject_mode_answers_429(http: aiohttp.ClientSession) -> None:
    """In reject mode a create beyond the quota is 429 RESOURCE_EXHAUSTED with quota details,
    and succeeds again once the running job has ended."""
    clock = ManualClock()
    async with Emulator(config(quota_mode=QuotaMode.REJECT), clock=clock) as emu:
        assert (await create(http, emu))[0] == 200
        status, err = await create(http, emu)
        assert status == 429
        assert err["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert "Global concurrent tuning jobs" in err["error"]["message"]
        types = [d["@type"] for d in err["error"]["details"]]
        assert "type.googleapis.com/google.rpc.ErrorInfo" in types
        assert len(emu.state.jobs) == 1
        clock.advance(105)
        assert (await create(http, emu))[0] == 200


async def test_transitions_are_independent_of_polling(http: aiohttp.ClientSession) -> None:
    """Jumping far ahead in one step gives the same times as polling every step would."""
    clock = ManualClock()
    async with Emulator(config(), clock=clock) as emu:
        _, job = await create(http, emu)
        clock.advance(10_000)
        done = await get(http, emu, job["name"])
        assert parse_timestamp(done["endTime"]) == at(105)
        snap = emu.state.snapshot()["jobs"][0]["transitions"]
        assert [t["tuningJobState"] for t in snap] == [
            None, "TUNING_JOB_STATE_PROCESSING_DATASET", "TUNING_JOB_STATE_WAITING_FOR_CAPACITY",
            "TUNING_JOB_STATE_TUNING", "TUNING_JOB_STATE_POST_PROCESSING", None]
        assert json.dumps(snap)  # serialisable for /emulator/state


async def test_transition_log_lines_name_the_remote_id_as_remote_id(
        http: aiohttp.ClientSession) -> None:
    """The emulator's job lines carry Vertex's id under `remote_id`, never under `job_id` (which
    in one embedded log is the daemon's local id)."""
    clock = ManualClock()
    async with Emulator(config(), clock=clock) as emu:
        _, job = await create(http, emu)
        with structlog.testing.capture_logs() as logs:
            clock.advance(5)
            await get(http, emu, job["name"])
    moved = [e for e in logs if e["event"] == "emulated_job.transitioned"]
    assert moved and all(e["remote_id"] == job["name"].rsplit("/", 1)[1] for e in moved)
    assert not any("job_id" in e for e in moved)
