"""Emulator inspection and admin endpoints: /emulator/state, /emulator/reset, /emulator/advance."""

from __future__ import annotations

from typing import Any

import aiohttp

from tuningd.emulator import Emulator, EmulatorConfig, ManualClock

PARENT = "projects/my-proj/locations/us-central1"
BODY: dict[str, Any] = {
    "baseModel": "gemini-2.5-flash",
    "supervised_tuning_spec": {"training_dataset_uri": "gs://my-bucket/train.jsonl"},
}


async def state(http: aiohttp.ClientSession, emu: Emulator) -> dict[str, Any]:
    async with http.get(f"{emu.url}/emulator/state") as resp:
        assert resp.status == 200
        result: dict[str, Any] = await resp.json()
        return result


async def test_state_reports_jobs_counts_and_max_active(http: aiohttp.ClientSession) -> None:
    """The state shows each job with its original body, counts per method/outcome, maxActive."""
    async with Emulator(EmulatorConfig(max_concurrent=2, pending_seconds=1, job_seconds=10),
                        clock=ManualClock()) as emu:
        for _ in range(3):
            async with http.post(f"{emu.url}/v1/{PARENT}/tuningJobs", json=BODY) as resp:
                assert resp.status == 200
        async with http.get(f"{emu.url}/v1/{PARENT}/tuningJobs/404") as resp:
            assert resp.status == 404
        snap = await state(http, emu)
        assert len(snap["jobs"]) == 3
        assert snap["jobs"][0]["request"] == BODY  # exactly as sent, snake_case and all
        assert snap["jobs"][0]["projectInPath"] == "my-proj"
        assert snap["jobs"][2]["tuningJobState"] == "TUNING_JOB_STATE_WAITING_FOR_QUOTA"
        assert snap["requestCounts"]["create"] == {"200": 3}
        assert snap["requestCounts"]["get"] == {"404": 1}
        assert snap["maxActive"] == 2 and snap["active"] == 2 and snap["waiting"] == 1
        assert snap["faults"]["error_rate"]["get"] == 0.0
        assert snap["config"]["maxConcurrent"] == 2


async def test_reset_forgets_everything(http: aiohttp.ClientSession) -> None:
    """POST /emulator/reset clears jobs, counters, maxActive and runtime faults."""
    async with Emulator(EmulatorConfig(), clock=ManualClock()) as emu:
        async with http.post(f"{emu.url}/v1/{PARENT}/tuningJobs", json=BODY):
            pass
        async with http.post(f"{emu.url}/emulator/faults", json={"error_rate": 0.5}):
            pass
        async with http.post(f"{emu.url}/emulator/reset") as resp:
            assert resp.status == 200
        snap = await state(http, emu)
        assert snap["jobs"] == [] and snap["requestCounts"] == {} and snap["maxActive"] == 0
        assert snap["faults"]["error_rate"]["create"] == 0.0


async def test_advance_endpoint_moves_a_manual_clock(http: aiohttp.ClientSession) -> None:
    """POST /emulator/advance lets an out-of-process test skip time on a manual clock."""
    async with Emulator(EmulatorConfig(pending_seconds=1, job_seconds=10),
                        clock=ManualClock()) as emu:
        async with http.post(f"{emu.url}/v1/{PARENT}/tuningJobs", json=BODY) as resp:
            name = (await resp.json())["name"]
        async with http.post(f"{emu.url}/emulator/advance", json={"seconds": 60}) as resp:
            assert resp.status == 200
            assert (await resp.json())["now"] == "2025-06-02T10:16:03.000000Z"
        async with http.get(f"{emu.url}/v1/{name}") as resp:
            assert (await resp.json())["state"] == "JOB_STATE_SUCCEEDED"
        async with http.post(f"{emu.url}/emulator/advance", json={"seconds": -1}) as resp:
            assert resp.status == 400


async def test_advance_refused_on_real_clock(http: aiohttp.ClientSession) -> None:
    """On the real clock time cannot be advanced: 400."""
    async with Emulator(EmulatorConfig()) as emu:
        resp = await http.post(f"{emu.url}/emulator/advance", json={"seconds": 1})
        assert resp.status == 400
        resp.release()


async def test_real_clock_runs_jobs(http: aiohttp.ClientSession) -> None:
    """With the default real clock and zero durations a job is SUCCEEDED straight away."""
    async with Emulator(EmulatorConfig(pending_seconds=0, job_seconds=0)) as emu:
        async with http.post(f"{emu.url}/v1/{PARENT}/tuningJobs", json=BODY) as resp:
            job = await resp.json()
        assert job["state"] == "JOB_STATE_SUCCEEDED"
        assert emu.url.startswith("http://127.0.0.1:") and emu.port > 0
