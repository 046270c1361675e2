"""Emulator fault injection (errors, latency, drops, lost replies) and per-minute rate limits."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tuningd.emulator import Emulator, EmulatorConfig, Faults, ManualClock

PARENT = "projects/my-proj/locations/us-central1"
BODY: dict[str, Any] = {
    "baseModel": "gemini-2.5-flash",
    "supervisedTuningSpec": {"trainingDatasetUri": "gs://my-bucket/train.jsonl"},
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(seed=11), clock=ManualClock()) as emulator:
        yield emulator


async def set_faults(http: aiohttp.ClientSession, emu: Emulator, **faults: Any) -> dict[str, Any]:
    async with http.post(f"{emu.url}/emulator/faults", json=faults) as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


async def request(http: aiohttp.ClientSession, emu: Emulator, method: str,
                  path: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, emu.url + path, json=body) as resp:
        return resp.status, await resp.json()


def counts(emu: Emulator, method: str) -> dict[str, int]:
    return dict(emu.state.request_counts.get(method, {}))


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
