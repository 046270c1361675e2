"""Emulator list: filters, pagination, ordering and their error answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tuningd.emulator import Emulator, EmulatorConfig, ManualClock

PARENT = "projects/my-proj/locations/us-central1"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    clock = ManualClock()
    async with Emulator(EmulatorConfig(max_concurrent=100, pending_seconds=5, job_seconds=100),
                        clock=clock) as emulator:
        yield emulator


def body(i: int, team: str) -> dict[str, Any]:
    return {
        "baseModel": "gemini-2.5-flash",
        "tunedModelDisplayName": f"model-{i:03d}",
        "labels": {"team": team, "idx": str(i)},
        "supervisedTuningSpec": {"trainingDatasetUri": "gs://my-bucket/train.jsonl"},
    }


async def make_jobs(http: aiohttp.ClientSession, emu: Emulator, count: int) -> list[str]:
    """Creates jobs one second apart (labels team=a for even, b for odd); returns names."""
    names = []
    for i in range(count):
        async with http.post(f"{emu.url}/v1/{PARENT}/tuningJobs",
                             json=body(i, "a" if i % 2 == 0 else "b")) as resp:
            assert resp.status == 200
            names.append((await resp.json())["name"])
        emu.advance(1)
    return names


async def list_page(http: aiohttp.ClientSession, emu: Emulator, query: str,
                    version: str = "v1") -> tuple[int, dict[str, Any]]:
    async with http.get(f"{emu.url}/{version}/{PARENT}/tuningJobs?{query}") as resp:
        return resp.status, await resp.json()


async def list_all(http: aiohttp.ClientSession, emu: Emulator, query: str) -> tuple[
        list[str], int]:
    names: list[str] = []
    token = ""
    pages = 0
    while True:
        q = query + (f"&pageToken={quote(token)}" if token else "")
        status, page = await list_page(http, emu, q)
        assert status == 200, page
        pages += 1
        names += [j["name"] for j in page.get("tuningJobs", [])]
        token = page.get("nextPageToken", "")
        if not token:
            return names, pages


async def test_follow_all_pages_newest_first(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """pageSize=3 over 8 jobs gives 3 pages, newest createTime first, no job twice."""
    names = await make_jobs(http, emu, 8)
    listed, pages = await list_all(http, emu, "pageSize=3")
    assert listed == list(reversed(names))
    assert pages == 3


async def test_default_and_maximum_page_size(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """Without pageSize a page holds 50 jobs; pageSize above 100 is clamped to 100."""
    await make_jobs(http, emu, 105)
    status, page = await list_page(http, emu, "")
    assert status == 200 and len(page["tuningJobs"]) == 50 and "nextPageToken" in page
    status, page = await list_page(http, emu, "pageSize=1000")
    assert len(page["tuningJobs"]) == 100
    status, page = await list_page(http, emu, "pageSize=0")
    assert len(page["tuningJobs"]) == 50


@pytest.mark.parametrize("query", ["pageSize=-1", "pageSize=ten", "pageToken=garbage!",
                                   "pageToken=AAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
async def test_bad_page_size_or_token_is_400(http: aiohttp.ClientSession, emu: Emulator,
                                             query: str) -> None:
    """A negative or non-numeric pageSize, or a forged pageToken, is 400 INVALID_ARGUMENT."""
    await make_jobs(http, emu, 2)
    status, err = await list_page(http, emu, query)
    assert status == 400
    assert err["error"]["status"] == "INVALID_ARGUMENT"


async def test_token_from_other_filter_is_rejected(http: aiohttp.ClientSession,
                                                   emu: Emulator) -> None:
    """A page token is bound to its filter; reusing it with another filter is 400."""
    await make_jobs(http, emu, 4)
    _, page = await list_page(http, emu, "pageSize=1&filter=" + quote("labels.team=a"))
    token = page["nextPageToken"]
    status, _ = await list_page(http, emu, "pageSize=1&filter=" + quote("labels.team=b")
                                + f"&pageToken={quote(token)}")
    assert status == 400


@pytest.mark.parametrize(("filter_text", "expected"), [
    ("labels.team=a", [0, 2, 4]),
    ("labels.team:*", [0, 1, 2, 3, 4, 5]),
    ("labels.team=a AND labels.idx=2", [2]),
    ("labels.idx=1 OR labels.idx=4", [1, 4]),
    ("NOT labels.team=a", [1, 3, 5]),
    ('display_name:"model-00*"', [0, 1, 2, 3, 4, 5]),
    ('display_name="model-003"', [3]),
    ('create_time>="2025-06-02T10:15:06Z"', [3, 4, 5]),
    ('state="JOB_STATE_RUNNING"', [0, 1]),
    ('state!="JOB_STATE_RUNNING" AND labels.team=b', [3, 5]),
    ("labels.nope=x", []),
])
async def test_filters(http: aiohttp.ClientSession, emu: Emulator, filter_text: str,
                       expected: list[int]) -> None:
    """The AIP-160 subset (labels, state, display_name, create_time, AND/OR/NOT) filters jobs."""
    names = await make_jobs(http, emu, 6)  # at +6 s jobs 0 and 1 run, the rest are PENDING
    listed, _ = await list_all(http, emu, "pageSize=2&filter=" + quote(filter_text))
    assert sorted(names.index(n) for n in listed) == expected


@pytest.mark.parametrize("filter_text", ["labels.team=", "state=BOGUS", "(labels.a=b",
                                         "frobnicate=1", "create_time>yesterday"])
async def test_unparseable_filter_is_400(http: aiohttp.ClientSession, emu: Emulator,
                                         filter_text: str) -> None:
    """A filter the grammar cannot parse answers 400 INVALID_ARGUMENT."""
    status, err = await list_page(http, emu, "filter=" + quote(filter_text))
    assert status == 400
    assert err["error"]["status"] == "INVALID_ARGUMENT"


async def test_list_is_per_location(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """Jobs are regional: another location lists nothing."""
    await make_jobs(http, emu, 2)
    url = f"{emu.url}/v1beta1/projects/my-proj/locations/europe-west4/tuningJobs"
    async with http.get(url) as r:
        assert (r.status, await r.json()) == (200, {})


async def test_snake_case_query_parameters(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """page_size/page_token spellings work like pageSize/pageToken."""
    names = await make_jobs(http, emu, 3)
    status, page = await list_page(http, emu, "page_size=2")
    assert status == 200 and len(page["tuningJobs"]) == 2
    status, rest = await list_page(http, emu,
                                   f"page_size=2&page_token={quote(page['nextPageToken'])}")
    assert [j["name"] for j in rest["tuningJobs"]] == [names[0]]
