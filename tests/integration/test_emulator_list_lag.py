"""Emulator list lag: lists show the world as it was list_lag_s ago; GET and cancel see now."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emulator_faults_helpers import COLLECTION, PARENT, call, job_body, listed, set_faults

from tuningd.emulator import Emulator, EmulatorConfig, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def emu(clock: ManualClock) -> AsyncIterator[Emulator]:
    config = EmulatorConfig(seed=8, max_concurrent=10, pending_seconds=5, job_seconds=60,
                            cancel_seconds=2)
    async with Emulator(config, clock=clock) as emulator:
        yield emulator


async def create(http: aiohttp.ClientSession, emu: Emulator, tag: str) -> str:
    code, job = await call(http, emu, "POST", COLLECTION, job_body(tag))
    assert code == 200
    name: str = job["name"]
    return name


def tags(jobs: list[dict[str, Any]]) -> list[str]:
    return [j["labels"]["tuningd-job-id"] for j in jobs]


async def test_lag_hides_new_jobs_while_get_sees_them(http: aiohttp.ClientSession,
                                                      emu: Emulator) -> None:
    """A job created within the last list_lag_s seconds is missing from lists, yet GET finds
    it and shows its current state."""
    first = await create(http, emu, "a")
    emu.advance(10)
    await create(http, emu, "b")
    await set_faults(http, emu, list_lag_s=30)
    assert await listed(http, emu) == []
    emu.advance(25)  # the list shows t=5: a existed (just started), b did not
    [shown] = await listed(http, emu)
    assert shown["name"] == first
    assert (shown["state"], shown["updateTime"]) == ("JOB_STATE_RUNNING", shown["startTime"])
    code, now = await call(http, emu, "GET", f"/v1beta1/{first}")
    assert code == 200 and now["tuningJobState"] == "TUNING_JOB_STATE_TUNING"
    await set_faults(http, emu)
    assert tags(await listed(http, emu)) == ["b", "a"]


async def test_lagged_list_shows_each_job_exactly_as_get_showed_it_then(
        http: aiohttp.ClientSession, emu: Emulator) -> None:
    """For past instants across a whole lifecycle (and a cancel), the lagged list entry equals
    the GET answer recorded at that instant: state, sub-state, times, stats and outputs."""
    done = await create(http, emu, "done")
    emu.advance(1)
    cancelled = await create(http, emu, "cancelled")
    seen: list[tuple[float, str, dict[str, Any]]] = []
    for step_s in (2, 5, 12, 10, 1, 1, 30, 9, 5, 8):
        emu.advance(step_s)
        if emu.clock.now() - ManualClock.DEFAULT_START_S == 30:
            assert (await call(http, emu, "POST", f"/v1/{cancelled}:cancel", {}))[0] == 200
        for tag, name in (("done", done), ("cancelled", cancelled)):
            code, got = await call(http, emu, "GET", f"/v1beta1/{name}")
            assert code == 200
            seen.append((emu.clock.now(), tag, got))
    states = {got["state"] for _, _, got in seen}
    assert {"JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED", "JOB_STATE_CANCELLED"} <= states
    emu.advance(500)
    end_s = emu.clock.now()
    for at_s, tag, got in seen:
        await set_faults(http, emu, list_lag_s=end_s - at_s)
        [shown] = await listed(http, emu, f"labels.tuningd-job-id={tag}", version="v1beta1")
        assert shown == got, (at_s - ManualClock.DEFAULT_START_S, tag)


async def test_filter_is_evaluated_on_the_lagged_view(http: aiohttp.ClientSession,
                                                      emu: Emulator) -> None:
    """A state filter matches what the lagged list shows, not the job's present state."""
    await create(http, emu, "a")
    emu.advance(100)  # a succeeded at t=65
    assert tags(await listed(http, emu, 'state="JOB_STATE_SUCCEEDED"')) == ["a"]
    await set_faults(http, emu, list_lag_s=50)  # shows t=50: still running
    assert tags(await listed(http, emu, 'state="JOB_STATE_RUNNING"')) == ["a"]
    assert await listed(http, emu, 'state="JOB_STATE_SUCCEEDED"') == []


async def test_paging_works_on_a_lagged_list(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """Pages of a lagged list follow each other newest first; jobs that become visible while
    paging appear on a fresh first page only."""
    for i in range(7):
        await create(http, emu, f"j{i}")
        emu.advance(1)
    await set_faults(http, emu, list_lag_s=3)  # now t=7, the list shows t=4: j0..j4
    code, page = await call(http, emu, "GET", f"{COLLECTION}?pageSize=2")
    assert code == 200 and tags(page["tuningJobs"]) == ["j4", "j3"]
    emu.advance(2)  # j5 and j6 become visible
    code, page = await call(http, emu, "GET",
                            f"{COLLECTION}?pageSize=2&pageToken={page['nextPageToken']}")
    assert tags(page["tuningJobs"]) == ["j2", "j1"]
    code, page = await call(http, emu, "GET",
                            f"{COLLECTION}?pageSize=2&pageToken={page['nextPageToken']}")
    assert tags(page["tuningJobs"]) == ["j0"] and "nextPageToken" not in page
    code, page = await call(http, emu, "GET", f"{COLLECTION}?pageSize=2")
    assert tags(page["tuningJobs"]) == ["j6", "j5"]


async def test_cancel_acts_on_the_present(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """Cancel works on a job the lagged list does not show yet, and GET shows the result."""
    await set_faults(http, emu, list_lag_s=30)
    name = await create(http, emu, "fresh")
    assert await listed(http, emu) == []
    assert (await call(http, emu, "POST", f"/v1/{name}:cancel", {}))[0] == 200
    code, got = await call(http, emu, "GET", f"/v1/{name}")
    assert (code, got["state"]) == (200, "JOB_STATE_CANCELLING")
    assert await listed(http, emu) == []


async def test_view_at_now_equals_the_live_view(http: aiohttp.ClientSession,
                                                emu: Emulator) -> None:
    """The transition history holds the whole view: at every instant, the view rebuilt from
    it equals the live view (so a lag of ~0 changes nothing)."""
    await create(http, emu, "a")
    emu.advance(3)
    name = await create(http, emu, "b")
    state = emu.state
    for step_s in (0, 1, 2, 3, 5, 8, 13, 21, 34, 55):
        emu.advance(step_s)
        if step_s == 8:
            await call(http, emu, "POST", f"/v1/{name}:cancel", {})
        for job in state.jobs.values():
            assert state.view_at(job, state.now()) == state.view(job)
    assert state.view_at(next(iter(state.jobs.values())), ManualClock.DEFAULT_START_S - 1) is None


async def test_other_locations_and_projects_by_number(http: aiohttp.ClientSession,
                                                      emu: Emulator) -> None:
    """The lag applies per list call whatever the parent spelling; locations stay separate."""
    await create(http, emu, "a")
    emu.advance(20)
    await set_faults(http, emu, list_lag_s=10)
    number_parent = PARENT.replace("my-proj", "123456789012")
    code, page = await call(http, emu, "GET", f"/v1/{number_parent}/tuningJobs")
    assert code == 200 and tags(page["tuningJobs"]) == ["a"]
    code, page = await call(http, emu, "GET", "/v1/projects/my-proj/locations/europe-west4/"
                            "tuningJobs")
    assert (code, page) == (200, {})
