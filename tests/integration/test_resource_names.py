"""Malformed projects/locations in the path: 400 at the door of the API and the emulator alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from engine_harness import Harness, open_harness, spec
from yarl import URL

from tuningd.core.model import LocalState
from tuningd.http.api import make_api_app
from tuningd.vertex import wire

Client = TestClient[web.Request, web.Application]

# (case, project, location, what is wrong) as raw path segments on the wire.
BAD_PARENTS: list[tuple[str, str, str, str]] = [
    ("percent-encoded slash in location", "my-proj", "us%2Fcentral1", "location"),
    ("percent-encoded slash in project", "my%2Fproj", "us-central1", "project"),
    ("uppercase location", "my-proj", "US-Central1", "location"),
    ("uppercase project", "My-Proj", "us-central1", "project"),
    ("space in project", "my%20proj", "us-central1", "project"),
    ("space in location", "my-proj", "us%20central1", "location"),
    ("empty project", "", "us-central1", "project"),
    ("empty location", "my-proj", "", "location"),
    ("too long project", "a" * 31, "us-central1", "project"),
    ("too long location", "my-proj", "a" * 53, "location"),
    ("too short project", "p", "us-central1", "project"),
    ("underscore in project", "my_proj", "us-central1", "project"),
]
GOOD_PARENTS = [("example.com:my-project", "us-central1"), ("123456789012", "europe-west4"),
                ("my-proj", "global"), ("my-proj", "us"), ("my-proj", "eu")]
ROUTES = [("POST", "", "parent"), ("GET", "", "parent"), ("GET", "/{id}", "name"),
          ("POST", "/{id}:cancel", "name")]


def _check_refusal(status: int, body: dict[str, Any], wrong: str, field: str) -> None:
    assert status == 400, body
    error = body["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    if wrong == "project":
        assert error["message"] == wire.INVALID_PROJECT_MESSAGE
        assert error["details"][0]["reason"] == "RESOURCE_PROJECT_INVALID"
    else:
        assert error["message"] == (f"List of found errors:\t1.Field: {field}; "
                                    f"Message: {wire.INVALID_LOCATION_DESCRIPTION}\t")
        assert error["details"][0]["fieldViolations"][0]["field"] == field


async def _stored(h: Harness) -> dict[LocalState, int]:
    return {s: n for s, n in (await h.store.count_by_state()).items() if n}


@pytest.mark.parametrize(("case", "project", "location", "wrong"), BAD_PARENTS,
                         ids=[c[0] for c in BAD_PARENTS])
@pytest.mark.parametrize("version", wire.API_VERSIONS)
async def test_api_refuses_bad_parent_on_every_route(
        daemon: tuple[Client, Harness], case: str, project: str, location: str, wrong: str,
        version: str) -> None:
    """create, list, get and cancel under a malformed parent answer 400 and store nothing."""
    client, h = daemon
    job = await h.submit()
    base = f"/{version}/projects/{project}/locations/{location}/tuningJobs"
    for method, suffix, field in ROUTES:
        path = base + suffix.format(id=job.id)
        body = spec() if method == "POST" and not suffix else None
        resp = await client.request(method, URL(path, encoded=True), json=body)
        _check_refusal(resp.status, await resp.json(), wrong, field)
    assert await _stored(h) == {LocalState.QUEUED: 1}
    assert (await h.job(job.id)).state is LocalState.QUEUED
    assert h.engine.state_counts()[LocalState.QUEUED] == 1


async def test_bad_parent_is_refused_before_the_allow_list(tmp_path: Path) -> None:
    """A malformed project is 400 even with an allow-list; a well-formed stranger stays 403."""
    async with open_harness(tmp_path) as h:
        app = make_api_app(h.engine, allowed_projects=["my-proj"],
                           allowed_locations=["us-central1"])
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/v1/projects/My-Proj/locations/us-central1/tuningJobs",
                                     json=spec())
            _check_refusal(resp.status, await resp.json(), "project", "parent")
            resp = await client.post("/v1/projects/my-proj/locations/US/tuningJobs",
                                     json=spec())
            _check_refusal(resp.status, await resp.json(), "location", "parent")
            resp = await client.post("/v1/projects/other-proj/locations/us-central1/tuningJobs",
                                     json=spec())
            assert resp.status == 403
            assert await _stored(h) == {}


@pytest.mark.parametrize(("project", "location"), GOOD_PARENTS)
async def test_api_accepts_every_valid_parent_form(daemon: tuple[Client, Harness], project: str,
                                                   location: str) -> None:
    """Domain-scoped ids, project numbers, global and the us/eu multi-regions all work."""
    client, h = daemon
    base = f"/v1/projects/{project}/locations/{location}/tuningJobs"
    resp = await client.post(base, json=spec())
    assert resp.status == 200, await resp.text()
    created = await resp.json()
    job_id = created["name"].rsplit("/", 1)[1]
    assert created["name"] == f"projects/{project}/locations/{location}/tuningJobs/{job_id}"
    assert (await client.get(f"{base}/{job_id}")).status == 200
    listed = await (await client.get(base)).json()
    assert [j["name"] for j in listed["tuningJobs"]] == [created["name"]]
    assert (await client.post(f"{base}/{job_id}:cancel")).status == 200
    assert (await h.job(job_id)).state is LocalState.CANCELLED


# --------------------------------------------------------------------------------------------
# The emulator refuses the same


async def test_emulator_refuses_what_vertex_refuses(tmp_path: Path) -> None:
    """Every malformed parent gets the same 400 from the emulator, which creates nothing."""
    async with open_harness(tmp_path) as h, aiohttp.ClientSession() as http:
        remote = await h.vertex.create("my-proj", "us-central1", spec())
        job_id = remote["name"].rsplit("/", 1)[1]
        for _, project, location, wrong in BAD_PARENTS:
            base = f"{h.emulator.url}/v1/projects/{project}/locations/{location}/tuningJobs"
            for method, suffix, field in ROUTES:
                url = URL(base + suffix.format(id=job_id), encoded=True)
                body = spec() if method == "POST" and not suffix else None
                async with http.request(method, url, json=body) as resp:
                    _check_refusal(resp.status, await resp.json(), wrong, field)
        assert len(h.remote_jobs()) == 1
        assert h.requests("create", "400") == len(BAD_PARENTS)


async def test_emulator_accepts_every_valid_parent_form(tmp_path: Path) -> None:
    """The emulator takes the parent forms Vertex takes (creates under each, then lists it)."""
    async with open_harness(tmp_path) as h:
        for project, location in GOOD_PARENTS:
            created = await h.vertex.create(project, location, spec())
            jobs, _ = await h.vertex.list(project, location)
            assert [j["name"] for j in jobs] == [created["name"]]
