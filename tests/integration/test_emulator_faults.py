"""Emulator fault injection (errors, latency, drops, lost replies, garbled replies), the fault
admin JSON and per-minute rate limits."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emulator_faults_helpers import call as request
from emulator_faults_helpers import counts, set_faults

from tuningd.emulator import Emulator, EmulatorConfig, ErrorRule, Faults, ManualClock

PARENT = "projects/my-proj/locations/us-central1"
BODY: dict[str, Any] = {
    "baseModel": "gemini-2.5-flash",
    "supervisedTuningSpec": {"trainingDatasetUri": "gs://my-bucket/train.jsonl"},
}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(seed=11), clock=ManualClock()) as emulator:
        yield emulator


@pytest.mark.parametrize(("status", "name"), [
    (429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (503, "UNAVAILABLE"),
    (504, "DEADLINE_EXCEEDED"),
])
async def test_injected_error_statuses_use_google_envelope(
        http: aiohttp.ClientSession, emu: Emulator, status: int, name: str) -> None:
    """error_rate=1 with a chosen status makes every call fail with that status and name."""
    await set_faults(http, emu, error_rate=1.0, error_status=status)
    code, body = await request(http, emu, "GET", f"/v1/{PARENT}/tuningJobs")
    assert code == status
    assert body["error"]["code"] == status
    assert body["error"]["status"] == name
    if status == 429:
        assert body["error"]["details"][0]["reason"] == "RATE_LIMIT_EXCEEDED"
    assert counts(emu, "list") == {str(status): 1}


async def test_error_rate_per_method(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """A per-method error rate hits only that method; creates are not applied when refused."""
    await set_faults(http, emu, error_rate={"create": 1.0}, error_status={"create": 500})
    code, _ = await request(http, emu, "POST", f"/v1/{PARENT}/tuningJobs", BODY)
    assert code == 500
    assert emu.state.jobs == {}
    code, _ = await request(http, emu, "GET", f"/v1/{PARENT}/tuningJobs")
    assert code == 200


async def test_partial_error_rate_is_seeded(http: aiohttp.ClientSession) -> None:
    """The same seed gives the same sequence of injected failures."""
    outcomes: list[list[int]] = []
    for _ in range(2):
        async with Emulator(EmulatorConfig(seed=5, faults=Faults(error_rates={"list": 0.5})),
                            clock=ManualClock()) as emu:
            run = []
            for _ in range(20):
                code, _ = await request(http, emu, "GET", f"/v1/{PARENT}/tuningJobs")
                run.append(code)
            outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {200, 503}


async def test_drop_closes_connection_without_response(http: aiohttp.ClientSession,
                                                       emu: Emulator) -> None:
    """drop_rate=1 closes the connection with no response; the call is counted as dropped."""
    await set_faults(http, emu, drop_rate={"get": 1.0})
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await request(http, emu, "GET", f"/v1/{PARENT}/tuningJobs/1234567890123456789")
    # aiohttp may retry an idempotent GET once on a fresh connection; both are dropped.
    assert set(counts(emu, "get")) == {"dropped"}


async def test_dropped_create_creates_nothing(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """A create dropped before processing leaves no job behind."""
    await set_faults(http, emu, drop_rate=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await request(http, emu, "POST", f"/v1/{PARENT}/tuningJobs", BODY)
    assert emu.state.jobs == {}


async def test_lost_reply_drop_creates_the_job(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """lost_reply mode 'drop': the job exists (findable by label) but the client sees no reply."""
    await set_faults(http, emu, lost_reply_rate=1.0, lost_reply_mode="drop")
    body = dict(BODY, labels={"tuningd-job-id": "abc-123"})
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await request(http, emu, "POST", f"/v1/{PARENT}/tuningJobs", body)
    assert len(emu.state.jobs) == 1
    await set_faults(http, emu)
    code, listed = await request(
        http, emu, "GET", f"/v1/{PARENT}/tuningJobs?filter=labels.tuningd-job-id%3Dabc-123")
    assert code == 200 and len(listed["tuningJobs"]) == 1
    assert counts(emu, "create") == {"lost_reply_dropped": 1}


async def test_lost_reply_503_creates_the_job(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """lost_reply mode '503': the client gets 503 UNAVAILABLE although the job was created."""
    await set_faults(http, emu, lost_reply_rate=1.0, lost_reply_mode="503")
    code, body = await request(http, emu, "POST", f"/v1/{PARENT}/tuningJobs", BODY)
    assert (code, body["error"]["status"]) == (503, "UNAVAILABLE")
    assert len(emu.state.jobs) == 1


async def test_latency_is_added(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """latency_s delays the answer by at least that long (real time, kept tiny)."""
    await set_faults(http, emu, latency_s=0.15)
    started = time.monotonic()
    code, _ = await request(http, emu, "GET", f"/v1/{PARENT}/tuningJobs")
    assert code == 200
    assert time.monotonic() - started >= 0.15


async def test_faults_admin_get_set_and_validation(http: aiohttp.ClientSession,
                                                   emu: Emulator) -> None:
    """GET returns current faults, POST replaces them, bad input is 400, {} clears."""
    shown = await set_faults(http, emu, error_rate=0.25, drop_rate={"cancel": 0.5}, latency_s=0.1)
    assert shown["error_rate"] == {"create": 0.25, "get": 0.25, "list": 0.25, "cancel": 0.25}
    assert shown["drop_rate"]["cancel"] == 0.5 and shown["drop_rate"]["get"] == 0.0
    async with http.get(f"{emu.url}/emulator/faults") as resp:
        assert await resp.json() == shown
    for bad in ({"error_rate": 2}, {"error_status": 418}, {"nope": 1},
                {"drop_rate": {"delete": 1.0}}, {"lost_reply_mode": "maybe"}, [1]):
        async with http.post(f"{emu.url}/emulator/faults", json=bad) as resp:
            assert resp.status == 400, bad
            assert (await resp.json())["error"]["status"] == "INVALID_ARGUMENT"
    cleared = await set_faults(http, emu)
    assert cleared == Faults().to_json()


async def test_faults_from_config_apply_at_start(http: aiohttp.ClientSession) -> None:
    """Faults given in EmulatorConfig are active from the first request."""
    cfg = EmulatorConfig(faults=Faults(error_rates={"get": 1.0}, error_statuses={"get": 504}))
    async with Emulator(cfg, clock=ManualClock()) as emu:
        code, _ = await request(http, emu, "GET", f"/v1/{PARENT}/tuningJobs/1")
        assert code == 504


async def test_requests_per_minute_limit(http: aiohttp.ClientSession) -> None:
    """Beyond requests_per_minute calls answer 429 until the one-minute window moves on."""
    clock = ManualClock()
    async with Emulator(EmulatorConfig(requests_per_minute=3), clock=clock) as emu:
        codes = [(await request(http, emu, "GET", f"/v1/{PARENT}/tuningJobs"))[0]
                 for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        code, body = await request(http, emu, "GET", f"/v1/{PARENT}/tuningJobs")
        assert code == 429
        assert "Resource management (CRUD) requests" in body["error"]["message"]
        clock.advance(60)
        assert (await request(http, emu, "GET", f"/v1/{PARENT}/tuningJobs"))[0] == 200


async def test_creates_per_minute_limit(http: aiohttp.ClientSession) -> None:
    """creates_per_minute limits only creates; reads stay allowed."""
    clock = ManualClock()
    cfg = EmulatorConfig(creates_per_minute=1, max_concurrent=5)
    async with Emulator(cfg, clock=clock) as emu:
        assert (await request(http, emu, "POST", f"/v1/{PARENT}/tuningJobs", BODY))[0] == 200
        code, body = await request(http, emu, "POST", f"/v1/{PARENT}/tuningJobs", BODY)
        assert (code, body["error"]["status"]) == (429, "RESOURCE_EXHAUSTED")
        assert "Job or LRO submission requests" in body["error"]["message"]
        assert (await request(http, emu, "GET", f"/v1/{PARENT}/tuningJobs"))[0] == 200
        clock.advance(61)
        assert (await request(http, emu, "POST", f"/v1/{PARENT}/tuningJobs", BODY))[0] == 200
        assert len(emu.state.jobs) == 2


async def test_admin_and_token_endpoints_are_exempt_from_faults(
        http: aiohttp.ClientSession, emu: Emulator) -> None:
    """Faults apply to the Vertex API only, never to the admin endpoints."""
    await set_faults(http, emu, error_rate=1.0, drop_rate=1.0)
    async with http.get(f"{emu.url}/emulator/state") as resp:
        assert resp.status == 200


# ------------------------------------------------------------------ garbled 200 replies


async def raw(http: aiohttp.ClientSession, emu: Emulator, method: str, path: str,
              body: Any = None) -> tuple[int, str, str, bytes]:
    async with http.request(method, emu.url + path, json=body) as resp:
        data = await resp.read()
        return (resp.status, resp.headers.get("Content-Type", ""),
                resp.headers.get("Content-Length", ""), data)


def unreadable(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return True
    return False


async def test_malformed_create_is_html_and_the_job_exists(http: aiohttp.ClientSession,
                                                           emu: Emulator) -> None:
    """malformed_rate on create: a 200 HTML page, yet the job was created."""
    await set_faults(http, emu, malformed_rate={"create": 1.0})
    code, ctype, _, data = await raw(http, emu, "POST", f"/v1/{PARENT}/tuningJobs", BODY)
    assert (code, ctype) == (200, "text/html; charset=UTF-8")
    assert data.startswith(b"<!DOCTYPE html>") and unreadable(data)
    assert len(emu.state.jobs) == 1
    assert counts(emu, "create") == {"malformed": 1}


async def test_truncated_create_is_half_the_real_body_and_the_job_exists(
        http: aiohttp.ClientSession, emu: Emulator) -> None:
    """truncated_rate on create: the first half of the real JSON answer, with a matching
    Content-Length; the job was created."""
    await set_faults(http, emu, truncated_rate={"create": 1.0})
    code, ctype, length, data = await raw(http, emu, "POST", f"/v1/{PARENT}/tuningJobs", BODY)
    assert (code, ctype) == (200, "application/json; charset=UTF-8")
    assert int(length) == len(data) and unreadable(data)
    [job] = emu.state.jobs.values()
    await set_faults(http, emu)
    _, _, _, full = await raw(http, emu, "GET", f"/v1/{PARENT}/tuningJobs/{job.job_id}")
    assert data == full[:len(full) // 2]
    assert counts(emu, "create") == {"truncated": 1}


@pytest.mark.parametrize("fault", ["malformed_rate", "truncated_rate"])
async def test_garbled_get_list_and_cancel_change_nothing(
        http: aiohttp.ClientSession, emu: Emulator, fault: str) -> None:
    """Garbled answers to get, list and cancel are unreadable 200s and change nothing: the
    cancel is not applied."""
    code, created = await request(http, emu, "POST", f"/v1/{PARENT}/tuningJobs", BODY)
    assert code == 200
    name = created["name"].replace("projects/123456789012", "projects/my-proj")
    await set_faults(http, emu, **{fault: 1.0})
    for verb, path, body in (("GET", f"/v1/{name}", None),
                             ("GET", f"/v1/{PARENT}/tuningJobs", None),
                             ("POST", f"/v1/{name}:cancel", {})):
        code, _, _, data = await raw(http, emu, verb, path, body)
        assert code == 200 and unreadable(data), (verb, path)
    [job] = emu.state.jobs.values()
    assert job.cancel_s is None and job.state.value == "JOB_STATE_PENDING"
    label = fault.removesuffix("_rate")
    assert counts(emu, "cancel") == {label: 1} and counts(emu, "get") == {label: 1}


async def test_garbled_cancel_still_answers_real_errors(http: aiohttp.ClientSession,
                                                        emu: Emulator) -> None:
    """A cancel that would fail (unknown job) answers its real error, not a garbled 200."""
    await set_faults(http, emu, malformed_rate=1.0)
    code, body = await request(http, emu, "POST",
                               f"/v1/{PARENT}/tuningJobs/1234567890123456789:cancel", {})
    assert (code, body["error"]["status"]) == (404, "NOT_FOUND")


# ------------------------------------------------------------------ admin JSON for new faults


async def test_new_fault_keys_round_trip(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """The new keys are accepted, shown by GET, and posting what GET shows changes nothing."""
    shown = await set_faults(
        http, emu, late_create_rate=0.5, late_create_delay_s=30, late_create_hold_s=0.5,
        list_lag_s=12, malformed_rate={"get": 0.25}, truncated_rate=0.1,
        error_rules=[{"status": 403, "method": "create", "project": "my-proj",
                      "reason": "SERVICE_DISABLED"},
                     {"status": 400, "location": "europe-west4", "rate": 0.5,
                      "status_name": "FAILED_PRECONDITION"}])
    assert shown["late_create_rate"] == 0.5 and shown["list_lag_s"] == 12
    assert shown["malformed_rate"] == {"create": 0.0, "get": 0.25, "list": 0.0, "cancel": 0.0}
    assert shown["truncated_rate"]["cancel"] == 0.1
    assert shown["error_rules"][0] == {
        "status": 403, "method": "create", "project": "my-proj", "location": "*", "rate": 1.0,
        "status_name": None, "reason": "SERVICE_DISABLED"}
    assert emu.state.faults.error_rules[1] == ErrorRule(
        400, location="europe-west4", rate=0.5, status_name="FAILED_PRECONDITION")
    async with http.get(f"{emu.url}/emulator/faults") as resp:
        assert await resp.json() == shown
    before = emu.state.faults
    assert await set_faults(http, emu, **shown) == shown
    assert emu.state.faults == before
    assert Faults.from_json(before.to_json()) == before
    assert await set_faults(http, emu) == Faults().to_json()
    assert emu.state.faults.late_create_delay_s == 90.0


@pytest.mark.parametrize(("bad", "key"), [
    ({"late_create_rate": 1.5}, "late_create_rate"),
    ({"late_create_rate": True}, "late_create_rate"),
    ({"late_create_delay_s": -1}, "late_create_delay_s"),
    ({"late_create_hold_s": "1"}, "late_create_hold_s"),
    ({"list_lag_s": -0.1}, "list_lag_s"),
    ({"malformed_rate": {"delete": 1.0}}, "malformed_rate"),
    ({"truncated_rate": 2}, "truncated_rate"),
    ({"error_rules": {"status": 403}}, "error_rules"),
    ({"error_rules": [{"method": "create"}]}, "error_rules[0]: status is required"),
    ({"error_rules": [{"status": 418}]}, "error_rules[0]: status must be one of"),
    ({"error_rules": [{"status": "403"}]}, "error_rules[0]: status must be one of"),
    ({"error_rules": [{"status": 403}, {"status": 403, "colour": "red"}]},
     "error_rules[1]: unknown key(s) colour"),
    ({"error_rules": [{"status": 403, "method": "delete"}]}, "error_rules[0]: method"),
    ({"error_rules": [{"status": 403, "project": 7}]}, "error_rules[0]: project"),
    ({"error_rules": [{"status": 403, "location": "US Central"}]}, "error_rules[0]: location"),
    ({"error_rules": [{"status": 403, "rate": -1}]}, "error_rules[0]: rate"),
    ({"error_rules": [{"status": 403, "reason": "NOPE"}]}, "error_rules[0]: reason"),
    ({"error_rules": [{"status": 503, "reason": "SERVICE_DISABLED"}]}, "error_rules[0]: reason"),
    ({"error_rules": [{"status": 500, "status_name": "ABORTED"}]},
     "error_rules[0]: status_name"),
    ({"error_rules": ["create:my-proj:403"]}, "error_rules[0]: must be a JSON object"),
])
async def test_new_fault_keys_are_validated(http: aiohttp.ClientSession, emu: Emulator,
                                            bad: dict[str, Any], key: str) -> None:
    """Bad values for the new keys answer 400 INVALID_ARGUMENT naming the key; nothing
    changes."""
    async with http.post(f"{emu.url}/emulator/faults", json=bad) as resp:
        body = await resp.json()
    assert resp.status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert key in body["error"]["message"]
    assert emu.state.faults == Faults()
