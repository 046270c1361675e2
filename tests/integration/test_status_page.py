"""The status JSON, the status page's fragment and shell, over a real engine, store and emulator
(and, for the roles, a leader and a standby on one shared store)."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from engine_harness import LOCATION, PROJECT, Harness, emulator_config, open_harness, settings
from ha_cluster import eventually, open_cluster

from tuningd import __version__
from tuningd.config_ha import HaSettings
from tuningd.core.model import LocalState
from tuningd.emulator.faults import ErrorRule
from tuningd.http.api import make_api_app
from tuningd.http.statuspage import PAGE_CSP

TOKEN = "page-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AGREED_KEYS = {"version", "role", "counts", "queue", "limits", "pausedCreates",
               "lastSuccessfulPollTime"}
# A short lease tried often: the first instance leads within a fraction of a second.
HA = HaSettings(lease_ttl_s=1.0, acquire_interval_s=0.1, fence_margin_s=0.3)
HOSTILE = "<script>alert('x')</script> & \"quoted\""

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """A real engine (v1beta1, so running jobs carry their sub-state) with two slots."""
    async with open_harness(tmp_path, emulator=emulator_config(pending_seconds=2, job_seconds=60),
                            engine=settings(max_active=2, initial_s=1.0, max_interval_s=2.0,
                                            per_base_model={"gemini-2.5-flash": 2},
                                            per_location={LOCATION: 5}),
                            api_version="v1beta1") as h:
        yield h


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[Client]:
    """The control API with a token around the harness's engine."""
    c = TestClient(TestServer(make_api_app(harness.engine, token=TOKEN)))
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()


async def _status(client: Client) -> dict[str, Any]:
    resp = await client.get("/v1/tuningd/status", headers=AUTH)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def _fragment(client: Client) -> str:
    resp = await client.get("/v1/tuningd/status.html", headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/html"
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    return await resp.text()


async def _running_with_substate(h: Harness, job_id: str) -> None:
    async def reached() -> bool:
        job = await h.job(job_id)
        return job.state is LocalState.RUNNING and job.remote_substate is not None
    await h.run_until(reached, limit_s=120)


async def test_status_json_has_the_agreed_shape_queue_active_jobs_and_limits(
        harness: Harness, client: Client) -> None:
    """The status answers the agreed keys; two jobs run with their sub-state and elapsed time,
    two wait in priority order with positions, every limit shows its active count."""
    h = harness
    first = await h.submit(priority=1)
    second = await h.submit(priority=1)
    await h.settle()
    low = await h.submit(priority=0)
    h.clock.advance(1)
    high = await h.submit(priority=5)
    await _running_with_substate(h, first.id)
    await _running_with_substate(h, second.id)

    body = await _status(client)
    assert body.keys() >= AGREED_KEYS
    assert (body["version"], body["role"]) == (__version__, "single")
    assert body["counts"]["running"] == 2 and body["counts"]["queued"] == 2
    assert body["queue"]["depth"] == 2
    assert body["queue"]["oldestQueuedTime"] == body["queued"][1]["createTime"]
    assert [(q["id"], q["queuePosition"]) for q in body["queued"]] == [(high.id, 1), (low.id, 2)]
    assert body["queued"][0]["waitingFor"] == ["global", "baseModel/gemini-2.5-flash"]
    active = {a["id"]: a for a in body["active"]}
    assert set(active) == {first.id, second.id}
    assert active[first.id]["state"] == "running"
    assert active[first.id]["remoteSubstate"].startswith("TUNING_JOB_STATE_")
    assert active[first.id]["elapsedSeconds"] > 0
    assert body["limits"] == [
        {"scope": "global", "kind": "global", "active": 2, "limit": 2},
        {"scope": f"locations/{LOCATION}", "kind": "location", "active": 2, "limit": 5},
        {"scope": "baseModel/gemini-2.5-flash", "kind": "base_model", "active": 2, "limit": 2},
    ]
    assert body["pausedCreates"] == []
    assert body["lastSuccessfulPollTime"] is not None
    assert body["recentFailures"] == []

    page = await _fragment(client)
    assert "running" in page and "tuning" in page.lower()
    assert f'data-job-id="{high.id}"><td class="num">1</td>' in page
    assert "2 / 2" in page and f"locations/{LOCATION}" in page


async def test_a_failed_job_is_a_recent_failure_with_its_error_also_after_a_restart(
        harness: Harness, client: Client) -> None:
    """A job refused at create is listed under recentFailures with its error, by the engine
    that failed it and by a fresh engine on the same store."""
    h = harness
    bad = await h.submit(base_model="no-such-model")
    await h.run_until_ended(bad.id, limit_s=60)

    failures = (await _status(client))["recentFailures"]
    assert [f["id"] for f in failures] == [bad.id]
    assert failures[0]["error"]["message"] and failures[0]["endTime"]
    assert html.escape(failures[0]["error"]["message"]) in await _fragment(client)

    await h.crash_and_restart()
    fresh = TestClient(TestServer(make_api_app(h.engine, token=TOKEN)))
    await fresh.start_server()
    try:
        assert [f["id"] for f in (await _status(fresh))["recentFailures"]] == [bad.id]
    finally:
        await fresh.close()


async def test_paused_creates_show_in_the_status_and_the_page(
        harness: Harness, client: Client) -> None:
    """After a project-wide create refusal (403) the place is listed as paused, with the
    status, the message and the next probe, in the JSON and the page."""
    h = harness
    h.set_faults(error_rules=(ErrorRule(403, method="create", reason="SERVICE_DISABLED"),))
    job = await h.submit()
    await h.settle()

    body = await _status(client)
    assert [(p["project"], p["location"], p["status"]) for p in body["pausedCreates"]] == [
        (PROJECT, LOCATION, "PERMISSION_DENIED")]
    assert body["pausedCreates"][0]["nextProbeTime"] > body["pausedCreates"][0]["since"]
    assert [q["id"] for q in body["queued"]] == [job.id]
    page = await _fragment(client)
    assert "Creates paused" in page and "PERMISSION_DENIED" in page
    assert "creates to this place are paused" in page


async def test_the_fragment_escapes_every_value(harness: Harness, client: Client) -> None:
    """A display name full of markup reaches the page as text, never as markup."""
    body = {"baseModel": "gemini-2.5-flash", "tunedModelDisplayName": HOSTILE,
            "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/train.jsonl"}}
    resp = await client.post(f"/v1/projects/{PROJECT}/locations/{LOCATION}/tuningJobs",
                             json=body, headers=AUTH)
    assert resp.status == 200, await resp.text()
    page = await _fragment(client)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;" in page
    assert (await _status(client))["queued"][0]["displayName"] == HOSTILE


async def test_the_head_of_a_long_queue_is_capped_and_ordered(
        harness: Harness, client: Client) -> None:
    """With more jobs queued than shown, the first 50 come in order with positions 1..50 and
    the depth counts them all."""
    h = harness
    for n in range(60):
        await h.submit(priority=n)
    body = await _status(client)
    assert body["queue"]["depth"] == 60
    assert [q["queuePosition"] for q in body["queued"]] == list(range(1, 51))
    assert [q["priority"] for q in body["queued"]] == list(range(59, 9, -1))
    assert "first 50 of 60" in await _fragment(client)


async def test_status_and_fragment_need_the_token_and_refuse_in_googles_envelope(
        client: Client) -> None:
    """Without the token (or with another) the status and the fragment answer 401
    UNAUTHENTICATED in Google's envelope with a Bearer challenge."""
    for path in ("/v1/tuningd/status", "/v1/tuningd/status.html"):
        for headers in ({}, {"Authorization": "Bearer not-it"}):
            resp = await client.get(path, headers=headers)
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            error = (await resp.json())["error"]
            assert (error["code"], error["status"]) == (401, "UNAUTHENTICATED")


async def test_the_shell_is_open_holds_no_data_and_its_inline_code_matches_the_csp(
        harness: Harness, client: Client) -> None:
    """`/` answers without a token, carries no job data, and its one script and one style are
    exactly those the Content-Security-Policy allows by hash."""
    await harness.submit()
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    csp = resp.headers["Content-Security-Policy"]
    assert csp == PAGE_CSP and "unsafe-inline" not in csp
    assert resp.headers["Cache-Control"] == "no-store"
    page = await resp.text()
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
        assert len(bodies) == 1
        digest = base64.b64encode(hashlib.sha256(bodies[0].encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in csp
    assert "sessionStorage" in page and "localStorage" not in page
    assert "gemini" not in page and TOKEN not in page


async def test_without_a_token_the_status_is_open(harness: Harness) -> None:
    """A daemon run without a token serves the status and the fragment to anyone (the page
    then never asks for a login)."""
    c = TestClient(TestServer(make_api_app(harness.engine)))
    await c.start_server()
    try:
        assert (await c.get("/v1/tuningd/status")).status == 200
        assert (await c.get("/v1/tuningd/status.html")).status == 200
    finally:
        await c.close()


async def test_openapi_documents_the_status_routes(client: Client) -> None:
    """/openapi.json lists the page, the status JSON (with its schema) and the fragment."""
    doc = await (await client.get("/openapi.json", headers=AUTH)).json()
    assert {"/", "/v1/tuningd/status", "/v1/tuningd/status.html"} <= doc["paths"].keys()
    assert doc["paths"]["/"]["get"]["security"] == []
    schema = doc["components"]["schemas"]["TuningdStatus"]
    assert set(schema["required"]) >= AGREED_KEYS


async def test_a_leader_and_a_standby_tell_their_role_and_the_same_queue() -> None:
    """On a shared store the leader answers role leader from its engine and a standby answers
    role standby from the store, both with the configured limits and the queued job."""
    engine_settings = settings(max_active=1, initial_s=0.1, max_interval_s=0.5)
    async with open_cluster(HA, engine_settings,
                            emulator_config(pending_seconds=5, job_seconds=60)) as cluster:
        leader = await cluster.add("a")
        await cluster.leader()
        standby = await cluster.add("b")
        first = await leader.create("one")
        second = await leader.create("two")
        second_id = second["name"].rsplit("/", 1)[-1]

        async def both_see_the_queue() -> bool:
            bodies = []
            for instance in (leader, standby):
                async with cluster.session.get(instance.url("/v1/tuningd/status")) as resp:
                    bodies.append(await resp.json())
            return all([q["id"] for q in b["queued"]] == [second_id] for b in bodies)

        await eventually(both_see_the_queue, what="the queue in both instances' status")
        for instance, role in ((leader, "leader"), (standby, "standby")):
            async with cluster.session.get(instance.url("/v1/tuningd/status")) as resp:
                body = await resp.json()
            assert body["role"] == role
            assert body["limits"][0] == {"scope": "global", "kind": "global",
                                         "active": 1, "limit": 1}
            assert [a["name"] for a in body["active"]] == [first["name"]]
