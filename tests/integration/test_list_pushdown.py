"""List filter push-down: the API over the real Engine and Store answers exactly what the full
predicate over every stored job answers, page by page, with and without push-down."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tuningd.adapters.pushdown import FilterPushdown, filter_pushdown
from tuningd.adapters.sqlite.store import Store
from tuningd.adapters.vertex_http import VertexClient
from tuningd.core.model import Job, LocalState
from tuningd.http.api import job_view, make_api_app
from tuningd.service.engine import Engine, EngineSettings, JobPredicate, Page
from tuningd.vertex import wire

PROJECT, LOCATION = "proj-a", "us-central1"
BASE = f"/v1/projects/{PROJECT}/locations/{LOCATION}/tuningJobs"
T0 = 1_750_000_000.0

FILTERS = [
    "",
    "state=JOB_STATE_QUEUED",
    "state=JOB_STATE_RUNNING",
    "state=JOB_STATE_FAILED",
    "state=JOB_STATE_PAUSED",
    'labels.team="rare"',
    "labels.team=a",
    'labels.team=a AND state=JOB_STATE_SUCCEEDED',
    "labels.team=a labels.tier=gold",
    'labels.team="rare" OR state=JOB_STATE_CANCELLED',
    "NOT labels.team=a AND state=JOB_STATE_QUEUED",
    "labels.team!=a AND labels.tier=gold",
    "labels.team:* AND state!=JOB_STATE_SUCCEEDED",
    "(labels.team=b OR labels.team=rare) AND state=JOB_STATE_FAILED",
    "labels.team=a AND labels.team=b",
    "state=JOB_STATE_FAILED AND state=JOB_STATE_RUNNING",
    'display_name:"job-1*" AND labels.team=c',
    f'create_time>="{wire.format_timestamp(T0 + 100)}" AND state=JOB_STATE_SUCCEEDED',
]


def _pushdown(text: str) -> FilterPushdown:
    """The store-side push-down of a filter parsed the way the API parses it."""
    return filter_pushdown(wire.parse_list_filter(text))


class NoPushdownEngine(Engine):
    """The engine as it was: every stored job goes through the predicate."""

    async def list_jobs(self, project: str, location: str, *, predicate: JobPredicate | None,
                        page_size: int, after_key: str | None,
                        states: frozenset[LocalState] | None = None,
                        labels: Mapping[str, str] | None = None) -> Page:
        return await super().list_jobs(project, location, predicate=predicate,
                                       page_size=page_size, after_key=after_key)


def _job(n: int, rng: random.Random) -> Job:
    states = list(LocalState)
    labels: dict[str, str] = {}
    if n % 50 == 7:
        labels["team"] = "rare"
    elif n % 5:
        labels["team"] = "abc"[n % 3]
    if n % 4 == 0:
        labels["tier"] = "gold"
    spec = {"baseModel": "gemini-2.5-flash", "tunedModelDisplayName": f"job-{n}",
            "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/t.jsonl"}}
    if labels:
        spec["labels"] = labels
    created = T0 + n // 3  # ties on created_at: the id breaks them
    return Job(id=f"job-{rng.getrandbits(32):08x}-{n:04d}", project=PROJECT, location=LOCATION,
               spec_json=json.dumps(spec), base_model="gemini-2.5-flash",
               state=rng.choice(states), created_at=created, updated_at=created)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "tuningd.db")
    rng = random.Random(3)
    for n in range(400):
        await s.create_or_get(_job(n, rng))
    # Another scope with the same labels and states must never leak in.
    other = _job(7, rng)
    await s.create_or_get(dataclasses.replace(other, id="other-scope", project="proj-b"))
    yield s
    await s.close()


async def _pages(client: TestClient[web.Request, web.Application], flt: str,
                 size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    params: dict[str, Any] = {"filter": flt, "pageSize": str(size)}
    while True:
        resp = await client.get(BASE, params=params)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        pages.append([j["name"].rsplit("/", 1)[-1] for j in body.get("tuningJobs", [])])
        if "nextPageToken" not in body:
            return pages
        params["pageToken"] = body["nextPageToken"]


async def test_results_are_identical_with_and_without_pushdown(store: Store) -> None:
    """Every filter, at small and large page sizes, pages exactly the jobs the full predicate
    selects, in the same pages with push-down as without."""
    vertex = cast(VertexClient, None)  # listing never calls Vertex
    clients = []
    for cls in (Engine, NoPushdownEngine):
        client = TestClient(TestServer(make_api_app(cls(store, vertex, EngineSettings()))))
        await client.start_server()
        clients.append(client)
    pushed, plain = clients
    everything = sorted(await store.list_jobs(PROJECT, LOCATION, limit=10_000),
                        key=lambda j: (j.created_at, j.id), reverse=True)
    try:
        for flt in FILTERS:
            pred = wire.compile_filter(flt)
            expected = [j.id for j in everything
                        if pred({k: v for k, v in job_view(j).items() if k != "tuningd"})]
            for size in (3, 50):
                got = await _pages(pushed, flt, size)
                before = await _pages(plain, flt, size)
                flat = [i for page in got for i in page]
                assert flat == expected, (flt, size)
                assert flat == [i for page in before for i in page], (flt, size)
                # The same pages; push-down may only drop a trailing empty page (it knows that
                # no further job can match).
                assert [p for p in got if p] == [p for p in before if p], (flt, size)
                assert all(len(p) == size for p in got[:-1]), (flt, size)
        assert any(_pushdown(f).labels for f in FILTERS)
    finally:
        for client in clients:
            await client.close()


async def test_engine_list_jobs_keyword_compatible(store: Store) -> None:
    """Callers that pass no push-down get what they always got; an empty state set is empty."""
    engine = Engine(store, cast(VertexClient, None), EngineSettings())
    page = await engine.list_jobs(PROJECT, LOCATION, predicate=None, page_size=10,
                                  after_key=None)
    assert len(page.jobs) == 10 and page.next_key is not None
    empty = await engine.list_jobs(PROJECT, LOCATION, predicate=None, page_size=10,
                                   after_key=None, states=frozenset())
    assert list(empty.jobs) == [] and empty.next_key is None
    rare = await engine.list_jobs(PROJECT, LOCATION, predicate=None, page_size=100,
                                  after_key=None, labels={"team": "rare"})
    assert rare.jobs and all(j.labels["team"] == "rare" for j in rare.jobs)
    assert all(j.project == PROJECT for j in rare.jobs)
