"""Emulator late creates: no answer now, the job lands later as if created then (real HTTP)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from emulator_faults_helpers import COLLECTION, PARENT, call, counts, job_body, listed, set_faults

from tuningd.emulator import Emulator, EmulatorConfig, Faults, ManualClock, QuotaMode
from tuningd.vertex import wire


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def emu(clock: ManualClock) -> AsyncIterator[Emulator]:
    # One quota slot: 5 s PENDING, then 60 s RUNNING.
    config = EmulatorConfig(seed=4, max_concurrent=1, pending_seconds=5, job_seconds=60)
    async with Emulator(config, clock=clock) as emulator:
        yield emulator


def stamp(seconds: float) -> str:
    return wire.format_timestamp(seconds)


def transitions(emu: Emulator, tag: str) -> list[tuple[float, str, str | None, str]]:
    """(seconds after the clock's start, state, sub-state, reason) of the job with this tag."""
    [job] = [j for j in emu.state.jobs.values()
             if j.spec.get("labels", {}).get("tuningd-job-id") == tag]
    start = ManualClock.DEFAULT_START_S
    return [(t.at_s - start, t.state.value,
             t.tuning_job_state.value if t.tuning_job_state else None, t.reason)
            for t in job.transitions]


async def late_create(http: aiohttp.ClientSession, emu: Emulator, tag: str) -> None:
    """A create that the emulator answers by closing the connection."""
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, emu, "POST", COLLECTION, job_body(tag))


async def test_late_create_lands_after_the_delay_with_that_create_time(
        http: aiohttp.ClientSession, clock: ManualClock, emu: Emulator) -> None:
    """The client sees a dropped connection, nothing exists until delay_s later, then the job
    is there with createTime = landing time and a fresh lifecycle."""
    await set_faults(http, emu, late_create_rate=1.0, late_create_delay_s=90)
    received_s = clock.now()
    await late_create(http, emu, "late-1")
    assert emu.state.jobs == {}
    [pending] = emu.state.pending_creates
    assert pending.land_s == received_s + 90
    assert counts(emu, "create") == {"late_create": 1}
    await set_faults(http, emu)  # clearing the faults does not take back a request in flight
    emu.advance(89.5)
    assert await listed(http, emu, "labels.tuningd-job-id=late-1") == []
    emu.advance(0.5)
    [job] = await listed(http, emu, "labels.tuningd-job-id=late-1")
    assert job["createTime"] == job["updateTime"] == stamp(received_s + 90)
    assert job["state"] == "JOB_STATE_PENDING"
    assert emu.state.pending_creates == ()
    emu.advance(5)
    code, got = await call(http, emu, "GET", f"/v1/{job['name']}")
    assert (code, got["state"], got["startTime"]) == (200, "JOB_STATE_RUNNING",
                                                      stamp(received_s + 95))


async def test_late_create_takes_its_quota_slot_on_landing_not_before(
        http: aiohttp.ClientSession, clock: ManualClock, emu: Emulator) -> None:
    """Until it lands a late create holds no slot; landing while the slot is busy it waits in
    WAITING_FOR_QUOTA and gets the slot when the running job ends."""
    await set_faults(http, emu, late_create_rate=1.0, late_create_delay_s=30)
    await late_create(http, emu, "late")
    await set_faults(http, emu)
    code, _ = await call(http, emu, "POST", COLLECTION, job_body("first"))
    assert code == 200 and emu.state.active_count == 1
    emu.advance(29)
    assert (emu.state.active_count, emu.state.snapshot()["waiting"]) == (1, 0)
    emu.advance(1)
    [late] = await listed(http, emu, "labels.tuningd-job-id=late", version="v1beta1")
    assert late["tuningJobState"] == "TUNING_JOB_STATE_WAITING_FOR_QUOTA"
    emu.advance(100)
    assert transitions(emu, "late")[:3] == [
        (30.0, "JOB_STATE_PENDING", "TUNING_JOB_STATE_WAITING_FOR_QUOTA", "created (landed late)"),
        (65.0, "JOB_STATE_PENDING", None, "quota slot granted"),
        (70.0, "JOB_STATE_RUNNING", "TUNING_JOB_STATE_PROCESSING_DATASET", "started"),
    ]
    assert emu.state.max_active == 1


async def test_one_long_advance_interleaves_landings_with_lifecycle_events(
        http: aiohttp.ClientSession, clock: ManualClock, emu: Emulator) -> None:
    """Jumping far ahead in one step replays ends, slot hand-overs and landings in time order:
    a create landing after a job ended takes the freed slot at once."""
    await set_faults(http, emu, late_create_rate=1.0, late_create_delay_s=30)
    await late_create(http, emu, "b")
    await set_faults(http, emu, late_create_rate=1.0, late_create_delay_s=140)
    await late_create(http, emu, "c")
    await set_faults(http, emu)
    assert (await call(http, emu, "POST", COLLECTION, job_body("a")))[0] == 200
    assert emu.state.next_event_s() == clock.now() + 5  # a starts before anything lands
    emu.advance(400)
    assert transitions(emu, "a")[-1][:2] == (65.0, "JOB_STATE_SUCCEEDED")
    assert [t[0] for t in transitions(emu, "b")] == [30, 65, 70, 76, 82, 124, 130]
    # c lands at 140, after b ended at 130: no waiting, the slot is its own at once.
    assert transitions(emu, "c")[:2] == [
        (140.0, "JOB_STATE_PENDING", None, "created (landed late)"),
        (145.0, "JOB_STATE_RUNNING", "TUNING_JOB_STATE_PROCESSING_DATASET", "started"),
    ]
    assert emu.state.max_active == 1


async def test_landing_at_the_instant_a_job_ends_sees_the_freed_slot(
        http: aiohttp.ClientSession, clock: ManualClock, emu: Emulator) -> None:
    """At an equal instant the lifecycle event goes first: a create landing when the running
    job ends gets the slot without waiting."""
    assert (await call(http, emu, "POST", COLLECTION, job_body("a")))[0] == 200
    await set_faults(http, emu, late_create_rate=1.0, late_create_delay_s=65)
    await late_create(http, emu, "b")
    emu.advance(65)
    assert transitions(emu, "b")[0] == (65.0, "JOB_STATE_PENDING", None,
                                        "created (landed late)")


async def test_next_event_includes_landings(http: aiohttp.ClientSession, clock: ManualClock,
                                            emu: Emulator) -> None:
    """next_event_s() reports a pending landing so the real-clock ticker logs it on time."""
    assert emu.state.next_event_s() is None
    await set_faults(http, emu, late_create_rate=1.0, late_create_delay_s=12)
    await late_create(http, emu, "x")
    assert emu.state.next_event_s() == clock.now() + 12
    emu.advance(12)
    assert emu.state.next_event_s() == clock.now() + 5  # now its start is next


async def test_hold_keeps_the_request_open_then_drops(http: aiohttp.ClientSession,
                                                      emu: Emulator) -> None:
    """With late_create_hold_s the connection stays open that long before it closes."""
    await set_faults(http, emu, late_create_rate=1.0, late_create_hold_s=0.2)
    started = time.monotonic()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, emu, "POST", COLLECTION, job_body("held"))
    assert time.monotonic() - started >= 0.2


async def test_client_timeout_during_hold_still_lands_the_job(
        http: aiohttp.ClientSession, clock: ManualClock, emu: Emulator) -> None:
    """A client that gives up while the request is held times out; the job lands anyway,
    hold + delay clock seconds after the request arrived."""
    await set_faults(http, emu, late_create_rate=1.0, late_create_hold_s=5, late_create_delay_s=20)
    received_s = clock.now()
    with pytest.raises(TimeoutError):
        await call(http, emu, "POST", COLLECTION, job_body("timed-out"),
                   timeout=aiohttp.ClientTimeout(total=0.2))
    [pending] = emu.state.pending_creates
    assert pending.land_s == received_s + 25
    emu.advance(25)
    [job] = await listed(http, emu, "labels.tuningd-job-id=timed-out")
    assert job["createTime"] == stamp(received_s + 25)


async def test_invalid_create_still_gets_its_400_at_once(http: aiohttp.ClientSession,
                                                         emu: Emulator) -> None:
    """Validation runs before the late-create roll: a bad body answers 400 and schedules
    nothing."""
    await set_faults(http, emu, late_create_rate=1.0)
    code, body = await call(http, emu, "POST", COLLECTION, {"baseModel": "gemini-2.5-flash"})
    assert (code, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert emu.state.pending_creates == () and emu.state.jobs == {}


async def test_late_create_refused_on_landing_in_reject_mode(http: aiohttp.ClientSession) -> None:
    """With quota_mode=reject a create landing while the quota is full creates nothing, as a
    create at that instant would have been refused."""
    config = EmulatorConfig(max_concurrent=1, quota_mode=QuotaMode.REJECT, pending_seconds=5,
                            job_seconds=60, faults=Faults(late_create_rate=1.0,
                                                          late_create_delay_s=10))
    async with Emulator(config, clock=ManualClock()) as emu:
        await late_create(http, emu, "refused")
        await set_faults(http, emu)
        assert (await call(http, emu, "POST", COLLECTION, job_body("first")))[0] == 200
        emu.advance(10)
        assert len(emu.state.jobs) == 1 and emu.state.pending_creates == ()
        assert emu.state.late_creates_rejected == 1
        assert emu.state.snapshot()["lateCreatesRejected"] == 1


async def test_state_endpoint_shows_pending_creates_and_faults(
        http: aiohttp.ClientSession, clock: ManualClock, emu: Emulator) -> None:
    """GET /emulator/state lists each pending late create (landing time, labels) and the
    faults; reset forgets them."""
    await set_faults(http, emu, late_create_rate=1.0, late_create_delay_s=42)
    received_s = clock.now()
    await late_create(http, emu, "seen")
    async with http.get(f"{emu.url}/emulator/state") as resp:
        snap = await resp.json()
    [pending] = snap["pendingCreates"]
    assert pending["landsAt"] == stamp(received_s + 42)
    assert pending["receivedAt"] == stamp(received_s)
    assert pending["labels"] == {"tuningd-job-id": "seen"}
    assert (pending["location"], pending["projectInPath"]) == ("us-central1", "my-proj")
    assert snap["faults"]["late_create_rate"] == 1.0
    assert snap["faults"]["late_create_delay_s"] == 42
    async with http.post(f"{emu.url}/emulator/reset") as resp:
        assert resp.status == 200
    assert emu.state.pending_creates == ()


async def test_late_creates_are_seeded(http: aiohttp.ClientSession) -> None:
    """The same seed picks the same creates to land late and gives the same job ids."""
    runs = []
    for _ in range(2):
        clock = ManualClock()
        faults = Faults(late_create_rate=0.5, late_create_delay_s=7)
        async with Emulator(EmulatorConfig(seed=21, max_concurrent=50, faults=faults),
                            clock=clock) as emu:
            outcomes = []
            for i in range(12):
                try:
                    code, _ = await call(http, emu, "POST", COLLECTION, job_body(f"j{i}"))
                    outcomes.append(code)
                except aiohttp.ServerDisconnectedError:
                    outcomes.append(0)
                emu.advance(1)
            emu.advance(10)
            ids = [(j.job_id, j.create_s - clock.DEFAULT_START_S)
                   for j in sorted(emu.state.jobs.values(), key=lambda j: j.seq)]
            runs.append((outcomes, ids))
    assert runs[0] == runs[1]
    assert set(runs[0][0]) == {0, 200} and len(runs[0][1]) == 12


async def test_late_create_on_v1beta1_path(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """A late create keeps the API version and project of its request."""
    await set_faults(http, emu, late_create_rate=1.0, late_create_delay_s=1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, emu, "POST", f"/v1beta1/{PARENT.replace('my-proj', '123456789012')}"
                   "/tuningJobs", job_body("beta"))
    emu.advance(1)
    [job] = emu.state.jobs.values()
    assert (job.api_version, job.project_in_path) == ("v1beta1", "123456789012")
