"""tuningd's own job routes: a job by a unique id prefix, and the list across every project and
location, over aiohttp's test server with the fake engine of test_api."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_api import FakeEngine, assert_error

from tuningd.core.model import LocalState
from tuningd.http.api import make_api_app

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def served() -> AsyncIterator[tuple[Client, FakeEngine]]:
    """The API over a fresh fake engine whose jobs have ids chosen by each test."""
    engine = FakeEngine()
    client = TestClient(TestServer(make_api_app(engine)))
    with structlog.testing.capture_logs():
        await client.start_server()
        yield client, engine
        await client.close()


def _add(engine: FakeEngine, job_id: str, **fields: Any) -> str:
    job = engine.add(**fields)
    engine.jobs[job_id] = engine.jobs.pop(job.id).evolve(id=job_id)
    engine.events[job_id] = engine.events.pop(job.id)
    return job_id


async def _list_all(client: Client, **query: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    token = ""
    while True:
        resp = await client.get("/v1/tuningd/jobs",
                                params={**query, **({"pageToken": token} if token else {})})
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        jobs.extend(page.get("tuningJobs") or [])
        token = page.get("nextPageToken", "")
        if not token:
            return jobs


async def test_a_unique_prefix_finds_the_job(served: tuple[Client, FakeEngine]) -> None:
    """A prefix of four or more characters that one job's id starts with answers that job
    with its history; the whole id still answers it when it is also a prefix of another."""
    client, engine = served
    _add(engine, "abcd1234-one")
    _add(engine, "abce5678-two", project="proj-z")
    _add(engine, "abcd1234-one-more")
    resp = await client.get("/v1/tuningd/jobs/abce")
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "projects/proj-z/locations/us-central1/tuningJobs/abce5678-two"
    assert body["tuningd"]["history"]
    exact = await (await client.get("/v1/tuningd/jobs/abcd1234-one")).json()
    assert exact["name"].endswith("/abcd1234-one")


async def test_an_ambiguous_prefix_is_400_naming_the_candidates(
        served: tuple[Client, FakeEngine]) -> None:
    """A prefix several ids start with is 400 INVALID_ARGUMENT whose message names them (at
    most five, then "and more")."""
    client, engine = served
    for n in range(3):
        _add(engine, f"abcd{n}-job")
    error = await assert_error(await client.get("/v1/tuningd/jobs/abcd"), 400,
                               "INVALID_ARGUMENT")
    assert "abcd0-job, abcd1-job, abcd2-job" in error["message"]
    assert "ambiguous" in error["message"] and "and more" not in error["message"]
    for n in range(3, 8):
        _add(engine, f"abcd{n}-job")
    error = await assert_error(await client.get("/v1/tuningd/jobs/abcd"), 400,
                               "INVALID_ARGUMENT")
    assert "abcd4-job and more" in error["message"] and "abcd5-job" not in error["message"]


async def test_unknown_and_short_prefixes_are_404(served: tuple[Client, FakeEngine]) -> None:
    """A prefix no id starts with, or one shorter than four characters, is 404 NOT_FOUND in
    Google's envelope (the short one says why)."""
    client, engine = served
    _add(engine, "abcd1234")
    await assert_error(await client.get("/v1/tuningd/jobs/abce"), 404, "NOT_FOUND")
    error = await assert_error(await client.get("/v1/tuningd/jobs/abc"), 404, "NOT_FOUND")
    assert "at least 4 characters" in error["message"]


async def test_vertex_routes_keep_exact_ids(served: tuple[Client, FakeEngine]) -> None:
    """The Vertex-style get and cancel take an exact id only: a prefix there is 404."""
    client, engine = served
    _add(engine, "abcd1234")
    base = "/v1/projects/proj-a/locations/us-central1/tuningJobs"
    await assert_error(await client.get(f"{base}/abcd"), 404, "NOT_FOUND")
    await assert_error(await client.post(f"{base}/abcd:cancel", json={}), 404, "NOT_FOUND")
    assert engine.jobs["abcd1234"].state is LocalState.QUEUED


async def test_prefixes_see_only_allowed_projects() -> None:
    """With an allow-list, a prefix resolves among the allowed projects' jobs only: a foreign
    job neither makes a prefix ambiguous nor is found by one."""
    engine = FakeEngine()
    _add(engine, "abcd-mine", project="proj-a")
    _add(engine, "abcd-theirs", project="proj-b")
    _add(engine, "efgh-theirs", project="proj-b")
    client = TestClient(TestServer(make_api_app(engine, allowed_projects=["proj-a"])))
    with structlog.testing.capture_logs():
        await client.start_server()
        try:
            body = await (await client.get("/v1/tuningd/jobs/abcd")).json()
            assert body["name"].endswith("/abcd-mine")
            await assert_error(await client.get("/v1/tuningd/jobs/efgh"), 404, "NOT_FOUND")
            listed = await _list_all(client)
            assert [j["name"].rsplit("/", 1)[-1] for j in listed] == ["abcd-mine"]
        finally:
            await client.close()


async def test_the_list_spans_every_project_and_location(
        served: tuple[Client, FakeEngine]) -> None:
    """GET /v1/tuningd/jobs pages through every project's and location's jobs newest first,
    with the tuningd object, a Vertex filter applied, and its tokens bound to it."""
    client, engine = served
    places = [("proj-a", "us-central1"), ("proj-b", "europe-west4"), ("proj-c", "us-central1")]
    added = [engine.add(project=p, location=loc) for p, loc in places * 25]
    engine.jobs[added[-1].id] = added[-1].evolve(state=LocalState.RUNNING,
                                                 remote_state="JOB_STATE_RUNNING")
    listed = await _list_all(client, pageSize="10")
    assert [j["name"] for j in listed] == [
        f"projects/{j.project}/locations/{j.location}/tuningJobs/{j.id}"
        for j in reversed(added)]
    assert listed[0]["tuningd"]["state"] == "running"
    assert listed[1]["tuningd"]["queuePosition"] >= 1
    running = await _list_all(client, filter="state=JOB_STATE_RUNNING")
    assert [j["name"].rsplit("/", 1)[-1] for j in running] == [added[-1].id]
    first = await (await client.get("/v1/tuningd/jobs", params={"pageSize": "2"})).json()
    vertex = "/v1/projects/proj-a/locations/us-central1/tuningJobs"
    await assert_error(await client.get(vertex, params={"pageToken": first["nextPageToken"]}),
                       400, "INVALID_ARGUMENT")
    await assert_error(await client.get("/v1/tuningd/jobs", params={"filter": "state=="}), 400,
                       "INVALID_ARGUMENT")
