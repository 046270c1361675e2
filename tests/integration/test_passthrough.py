"""The pass-through (the SDKs' reads and verbs beside tuningJobs CRUD) over a real engine, store
and emulator: allow-list, job id mapping, scope, request budget and size limit."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from engine_harness import LOCATION, PROJECT, Harness, open_harness, settings

from tuningd.core.budget import BudgetSettings
from tuningd.core.errors import InvalidArgument
from tuningd.http.api import make_api_app
from tuningd.http.passthrough import Passthrough

Client = TestClient[web.Request, web.Application]
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
V1 = f"/v1/{PARENT}"
BETA = f"/v1beta1/{PARENT}"
MAX_BODY_BYTES = 4096


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Client, Harness]]:
    """The API with the pass-through, scoped to PROJECT, over a harness (loop not run)."""
    async with open_harness(tmp_path) as h:
        app = make_api_app(h.engine, allowed_projects=[PROJECT], max_body_bytes=MAX_BODY_BYTES,
                           passthrough=Passthrough(h.vertex, h.engine))
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield client, h
        finally:
            await client.close()


async def _error(response: Any, status: int, code: str) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"]["status"] == code, body
    message: str = body["error"]["message"]
    return message


async def _succeeded_job(h: Harness) -> tuple[str, dict[str, Any]]:
    """A tuningd job run to success, and its Vertex view (as the emulator shows it)."""
    job = await h.submit()
    await h.run_until_ended(job.id, every=5.0)
    remote = h.remote_for(job.id)[0]
    return job.id, h.emulator.state.view(remote)


async def test_tuned_model_and_endpoint_are_forwarded(world: tuple[Client, Harness]) -> None:
    """The tuned model and endpoint a succeeded job names (under Vertex's project number) are
    read through tuningd exactly as Vertex answers them."""
    client, h = world
    _, view = await _succeeded_job(h)
    model_name = view["tunedModel"]["model"]
    endpoint_name = view["tunedModel"]["endpoint"]
    assert model_name.startswith(f"projects/{h.emulator.state.config.project_number}/")
    model = await client.get(f"/v1/{model_name}")
    assert model.status == 200, await model.text()
    assert (await model.json())["name"] == model_name.partition("@")[0]
    assert model.headers["Content-Type"].startswith("application/json")
    endpoint = await client.get(f"/v1beta1/{endpoint_name}")
    assert (await endpoint.json())["name"] == endpoint_name
    missing = await client.get(f"{V1}/models/999")
    await _error(missing, 404, "NOT_FOUND")


async def test_scope_is_checked_before_forwarding(world: tuple[Client, Harness]) -> None:
    """A project outside allowed_projects, or a project number no tuningd job was created
    under, is refused locally with 403 and never reaches Vertex."""
    client, h = world
    for path in ("/v1/projects/other-proj/locations/us-central1/models/1",
                 "/v1/projects/99999/locations/us-central1/endpoints/1"):
        await _error(await client.get(path), 403, "PERMISSION_DENIED")
    assert not h.emulator.state.request_counts.get("model")


async def test_paths_outside_the_allow_list_are_unknown_methods(
        world: tuple[Client, Harness]) -> None:
    """Shapes not on the allow-list (other collections, other HTTP methods, v1-only verbs at v1)
    answer 404 "Method not found." as Google's front end does."""
    client, _ = world
    for method, path in (("GET", f"{V1}/datasets/1"), ("DELETE", f"{V1}/models/1"),
                         ("POST", f"{V1}/tuningJobs:optimizePrompt"),
                         ("GET", f"/ui/{PARENT}/models/1")):
        message = await _error(await client.request(method, path), 404, "NOT_FOUND")
        assert message == "Method not found."


async def test_operations_of_a_tuningd_job_are_mapped(world: tuple[Client, Harness]) -> None:
    """A tuningd job id in an operations path goes to Vertex as its remote job id, and Vertex's
    answer names the tuningd job again; before the job exists remotely tuningd answers itself."""
    client, h = world
    job = await h.submit()
    queued = await client.get(f"{BETA}/tuningJobs/{job.id}/operations")
    assert queued.status == 200 and await queued.json() == {}
    message = await _error(await client.get(f"{BETA}/tuningJobs/{job.id}/operations/7"),
                           404, "NOT_FOUND")
    assert "has not been created on Vertex yet" in message
    await h.settle()
    remote_id = h.remote_for(job.id)[0].job_id
    assert remote_id != job.id
    message = await _error(await client.get(f"/ui/{PARENT}/tuningJobs/{job.id}/operations/7"),
                           404, "NOT_FOUND")
    assert f"{PARENT}/tuningJobs/{job.id}/operations/7" in message
    assert remote_id not in message
    assert h.emulator.state.request_counts["operations"].get("404") == 1


async def test_rebase_maps_the_tuningd_job(world: tuple[Client, Harness]) -> None:
    """rebaseTunedModel naming a tuningd job rebases its Vertex job; naming one not yet created
    on Vertex is a local FAILED_PRECONDITION."""
    client, h = world
    queued = await h.submit()
    body = {"tunedModelRef": {"tuningJob": f"{PARENT}/tuningJobs/{queued.id}"}}
    await _error(await client.post(f"{V1}/tuningJobs:rebaseTunedModel", json=body),
                 400, "FAILED_PRECONDITION")
    job_id, _ = await _succeeded_job(h)
    before = len(h.remote_jobs())
    body = {"tunedModelRef": {"tuningJob": f"{PARENT}/tuningJobs/{job_id}"},
            "artifactDestination": {"outputUriPrefix": "gs://bkt/rebased"}}
    answer = await client.post(f"{V1}/tuningJobs:rebaseTunedModel", json=body)
    assert answer.status == 200, await answer.text()
    operation = await answer.json()
    assert "/operations/" in operation["name"]
    # Vertex made a new job from the tuningd job's remote one (it knows no tuningd id).
    assert len(h.remote_jobs()) == before + 1
    polled = await client.get(f"/v1/{operation['name']}")
    assert polled.status == 200 and (await polled.json())["name"] == operation["name"]


async def test_reward_validation_and_prompt_optimizer(world: tuple[Client, Harness]) -> None:
    """The v1beta1 tools pass through: a string-match reward scores the sample response."""
    client, _ = world
    body = {"sampleResponse": {"parts": [{"text": "The answer is 42"}]},
            "example": {"references": {"answer": "42"}},
            "singleRewardConfig": {"rewardName": "exact", "stringMatchRewardScorer": {
                "stringMatchExpression": {"expression": "{{references.answer}}",
                                          "matchOperation": "PARTIAL_MATCH"}}}}
    answer = await client.post(f"{BETA}/tuningJobs:validateReinforcementTuningReward",
                               json=body)
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["overallReward"] == 1.0
    optimized = await client.post(f"{BETA}/tuningJobs:optimizePrompt",
                                  json={"content": {"parts": [{"text": "Summarise."}]}})
    chunks = await optimized.json()
    text = "".join(c["content"]["parts"][0]["text"] for c in chunks)
    assert "Summarise." in text


async def test_size_limit(world: tuple[Client, Harness]) -> None:
    """A body over server.max_body_bytes answers 413 and is not forwarded."""
    client, h = world
    big = json.dumps({"content": {"parts": [{"text": "x" * MAX_BODY_BYTES}]}})
    answer = await client.post(f"{BETA}/tuningJobs:optimizePrompt", data=big,
                               headers={"Content-Type": "application/json"})
    await _error(answer, 413, "INVALID_ARGUMENT")
    assert not h.emulator.state.request_counts.get("optimizePrompt")


async def test_request_budget(tmp_path: Path) -> None:
    """Each forwarded call spends one token of the location's request budget; a spent budget
    answers 429 RESOURCE_EXHAUSTED with RetryInfo, without calling Vertex."""
    engine = dataclasses.replace(settings(), budget=BudgetSettings(requests_per_minute=6.0))
    async with open_harness(tmp_path, engine=engine) as h:
        app = make_api_app(h.engine, passthrough=Passthrough(h.vertex, h.engine))
        async with TestClient(TestServer(app)) as client:
            first = await client.get(f"{V1}/models/1")
            await _error(first, 404, "NOT_FOUND")  # forwarded: Vertex has no such model
            second = await client.get(f"{V1}/models/1")
            await _error(second, 429, "RESOURCE_EXHAUSTED")
            details = (await second.json())["error"]["details"]
            assert details[0]["@type"].endswith("RetryInfo")
        assert h.emulator.state.request_counts["model"] == {"404": 1}


@pytest.mark.parametrize("path", [
    "/projects/p/locations/us-central1/../../v1/x",
    "/projects/p/locations/europe-west4/models/1",
    "/projects/p/locations/us-central1/models/1?alt=x",
    "/models/1",
])
async def test_forward_refuses_paths_it_cannot_own(tmp_path: Path, path: str) -> None:
    """VertexClient.forward only sends resource paths of the location whose host it calls."""
    async with open_harness(tmp_path) as h:
        with pytest.raises(InvalidArgument):
            await h.vertex.forward("GET", path, location=LOCATION, api_version="v1")
        assert not h.emulator.state.request_counts.get("model")
