"""The create answer (built from the parsed spec, issue 11) against GET and the general renderer,
through the API around a real engine and SQLite store, for every example request."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from engine_harness import LOCATION, PROJECT, Harness

from tuningd.core import recovery
from tuningd.core.model import LocalState
from tuningd.http.jobview import job_view, render_queued, render_view
from tuningd.service.facade import queued_job
from tuningd.vertex import wire

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REQUESTS = sorted(EXAMPLES.glob("request-*.json"))
COLLECTION = f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs"
INT_ENUMS = "$alt=json%3Benum-encoding%3Dint"
# Beyond the examples: labels, an int64 as a string, enums by number, nested lists and maps.
RICH: dict[str, Any] = {
    "base_model": "gemini-2.5-flash",
    "tunedModelDisplayName": "zeta",
    "labels": {"team": "nlp", "a-first": "x"},
    "description": "d",
    "supervisedTuningSpec": {
        "validationDatasetUri": "gs://b/v.jsonl",
        "trainingDatasetUri": "gs://b/t.jsonl",
        "hyperParameters": {"epochCount": "3", "adapterSize": 2,
                            "learningRateMultiplier": 0.5},
    },
}


def _bodies() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in REQUESTS] + [
        ("rich", RICH)]


def test_the_examples_are_found() -> None:
    """The parametrisation below covers examples/request-*.json (not an empty list)."""
    assert [p.name for p in REQUESTS] == ["request-advanced.json", "request-basic.json"]


@pytest.mark.parametrize("name,body", _bodies(), ids=[n for n, _ in _bodies()])
@pytest.mark.parametrize("version", wire.API_VERSIONS)
@pytest.mark.parametrize("enum_as_int", [False, True], ids=["enum-names", "enum-int"])
@pytest.mark.parametrize("query", ["", "requestId=r-1&priority=7"], ids=["plain", "request-id"])
async def test_create_reply_is_the_get_view(daemon: tuple[Any, Harness], name: str,
                                            body: dict[str, Any], version: str,
                                            enum_as_int: bool, query: str) -> None:
    """A create's answer has the bytes the general renderer makes of the stored job, and the
    content GET answers for it at that moment (GET adds the history)."""
    client, h = daemon
    # A job ahead in the queue, so that the queue position is not trivially 1.
    ahead = await client.post(f"/{version}/{COLLECTION}", json=body)
    assert ahead.status == 200, await ahead.text()
    params = "&".join(p for p in (query, INT_ENUMS if enum_as_int else "") if p)
    suffix = f"?{params}" if params else ""
    resp = await client.post(f"/{version}/{COLLECTION}{suffix}", json=body)
    assert resp.status == 200, await resp.text()
    raw = await resp.read()
    created = json.loads(raw)
    job_id = created["name"].rsplit("/", 1)[1]

    stored = await h.store.get(job_id)
    assert stored is not None and stored.state is LocalState.QUEUED
    general = render_view(job_view(stored, queue_position=h.engine.queue_position(stored),
                                   pause=h.engine.pause_for(stored)),
                          enum_as_int=enum_as_int, api_version=version)
    assert raw == json.dumps(general).encode()

    got = await client.get(f"/{version}/{COLLECTION}/{job_id}{suffix}")
    assert got.status == 200, await got.text()
    view = await got.json()
    assert [e["to"] for e in view["tuningd"].pop("history")] == ["queued"]
    assert view == created
    # Priority 7 goes ahead of the first job (priority 0); at equal priority and the harness's
    # one clock reading, the job ids decide.
    assert created["tuningd"]["queuePosition"] in ((1,) if "priority" in query else (1, 2))
    assert created["state"] == (1 if enum_as_int else "JOB_STATE_QUEUED")  # JobState number


async def test_a_replayed_create_answers_the_job_as_it_is_now(
        daemon: tuple[Any, Harness]) -> None:
    """A requestId replay is answered by the general path: the job as stored now."""
    client, h = daemon
    url = f"/v1/{COLLECTION}?requestId=replay-1"
    first = await (await client.post(url, json=RICH)).json()
    job_id = first["name"].rsplit("/", 1)[1]
    await h.engine.cancel(job_id)
    again = await client.post(url, json=RICH)
    assert again.status == 200
    replay = await again.json()
    assert replay["name"] == first["name"]
    assert replay["state"] == "JOB_STATE_CANCELLED" and "queuePosition" not in replay["tuningd"]


@pytest.mark.parametrize("version", wire.API_VERSIONS)
@pytest.mark.parametrize("enum_as_int", [False, True])
def test_render_queued_matches_the_general_renderer_with_a_pause(version: str,
                                                                 enum_as_int: bool) -> None:
    """With creates paused, a last error and a later update time, the light path still renders
    the same bytes as job_view + render_view, and refuses a job that is not only queued."""
    spec = wire.strip_output_only(wire.parse_tuning_job(RICH, api_version=version))
    now = time.time()
    job = queued_job("j-1", PROJECT, LOCATION, spec, priority=3, request_id="r",
                     api_version=version, now=now)
    job = job.evolve(updated_at=now + 1.25, last_error_code=7, last_error_message="denied",
                     last_error_at=now)
    pause = recovery.Pause(status="PERMISSION_DENIED", message="no", since=now - 5,
                           probe_at=now + 30)
    light = render_queued(job, spec, queue_position=4, pause=pause, enum_as_int=enum_as_int,
                          api_version=version, now=now)
    general = render_view(job_view(job, queue_position=4, pause=pause, now=now),
                          enum_as_int=enum_as_int, api_version=version)
    assert json.dumps(light) == json.dumps(general)
    ext = light["tuningd"]
    assert ext["createsPaused"]["status"] == "PERMISSION_DENIED"
    assert ext["lastError"]["status"] == "PERMISSION_DENIED" and "nextAttemptTime" in ext
    with pytest.raises(ValueError):
        render_queued(job.evolve(state=LocalState.SUBMITTING), spec, queue_position=None,
                      pause=None)
