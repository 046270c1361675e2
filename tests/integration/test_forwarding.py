"""Issue 8 breakages 1 and 4 through the API around a real engine, store and emulator (HTTP):
jobs go to Vertex at their client's version, as sent, and come back as Vertex shows them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from engine_harness import LOCATION, PROJECT, Harness, emulator_config, open_harness, settings, spec

from tuningd.core.model import (
    LABEL_JOB_ID,
    LABEL_MANAGED,
    LEGACY_LABEL_MANAGED_BY,
    LEGACY_MANAGED_BY_VALUE,
    LocalState,
)
from tuningd.emulator.state import EmulatedJob
from tuningd.http.api import make_api_app
from tuningd.vertex.models import DEFAULT_MODEL_SIZES, catalog_from_sizes

Client = TestClient[web.Request, web.Application]
COLLECTION = f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs"
# A model the emulator (standing in for a Vertex newer than this tuningd) knows and tuningd's
# catalog does not.
NEW_MODEL = "gemini-9-flash"
# tuningd's own resource fields in a view; everything else is Vertex's.
OWN_FIELDS = ("name", "state", "createTime", "updateTime", "labels", "tuningd")


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Client, Harness]]:
    """The API (default catalog: unknown models forwarded) around a real engine whose emulator
    also knows NEW_MODEL, with the Vertex client's default version left at v1."""
    emulated = catalog_from_sizes({**DEFAULT_MODEL_SIZES, NEW_MODEL: (1, 4)})
    config = dataclasses.replace(emulator_config(), catalog=emulated)
    async with open_harness(tmp_path, emulator=config) as h:
        client = TestClient(TestServer(make_api_app(h.engine)))
        await client.start_server()
        try:
            yield client, h
        finally:
            await client.close()


async def _create(client: Client, version: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post(f"/{version}/{COLLECTION}", json=body)
    assert resp.status == 200, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


async def _get(client: Client, version: str, job_id: str) -> dict[str, Any]:
    resp = await client.get(f"/{version}/{COLLECTION}/{job_id}")
    assert resp.status == 200, await resp.text()
    view: dict[str, Any] = await resp.json()
    return view


async def _emulator_get(h: Harness, version: str, remote: EmulatedJob) -> dict[str, Any]:
    """The job as the emulator answers a GET for it at `version`, over HTTP."""
    name = h.emulator.state.job_name(remote)
    async with h.session.get(f"{h.emulator.url}/{version}/{name}") as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


def _vertex_part(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in OWN_FIELDS}


async def test_v1beta1_fields_reach_vertex_and_get_shows_what_vertex_returned(
        daemon: tuple[Client, Harness]) -> None:
    """A v1beta1 create with learningRate, batchSize, tuningMode and outputUri reaches the
    emulator with them at v1beta1; GET shows what the emulator returned, sub-states and
    tuningJobMetadata included, and never learningRateMultiplier beside learningRate unless
    the emulator said so."""
    client, h = daemon
    body = spec()
    body["outputUri"] = "gs://my-bucket/out/"
    body["supervisedTuningSpec"]["tuningMode"] = "TUNING_MODE_FULL"
    body["supervisedTuningSpec"]["hyperParameters"] = {
        "epochCount": "2", "learningRate": 0.0002, "batchSize": "16"}
    body["labels"] = {"team": "nlp"}
    job_id = (await _create(client, "v1beta1", body))["name"].rsplit("/", 1)[-1]

    queued = await _get(client, "v1beta1", job_id)
    assert queued["supervisedTuningSpec"]["hyperParameters"] == body["supervisedTuningSpec"][
        "hyperParameters"]
    assert "tuningJobState" not in queued and "startTime" not in queued  # nothing invented

    await h.settle()
    (remote,) = h.remote_for(job_id)
    assert remote.api_version == "v1beta1"
    sent = remote.request_body
    assert sent["outputUri"] == "gs://my-bucket/out/"
    assert sent["supervisedTuningSpec"]["tuningMode"] == "TUNING_MODE_FULL"
    assert sent["supervisedTuningSpec"]["hyperParameters"] == {
        "epochCount": "2", "learningRate": 0.0002, "batchSize": "16"}
    assert sent["labels"]["team"] == "nlp" and sent["labels"][LABEL_JOB_ID] == job_id

    await h.run_until(lambda: _running(h, job_id), every=1.0, limit_s=600)
    await h.tick(30)  # the next poll fetches the running job's sub-state
    await h.engine.step()
    running = await _get(client, "v1beta1", job_id)
    assert running["tuningd"]["apiVersion"] == "v1beta1"
    vertex_view = await _emulator_get(h, "v1beta1", remote)
    assert "tuningJobState" in vertex_view
    assert _vertex_part(running) == _vertex_part(vertex_view)
    assert running["labels"] == {"team": "nlp"}

    await h.run_until_ended(job_id)
    done = await _get(client, "v1beta1", job_id)
    vertex_view = await _emulator_get(h, "v1beta1", remote)
    assert done["state"] == vertex_view["state"] == "JOB_STATE_SUCCEEDED"
    assert "tuningJobMetadata" in vertex_view
    assert _vertex_part(done) == _vertex_part(vertex_view)


async def _running(h: Harness, job_id: str) -> bool:
    return (await h.job(job_id)).state is LocalState.RUNNING


async def test_latest_and_unknown_models_are_forwarded_and_get_vertexs_answer(
        daemon: tuple[Client, Harness]) -> None:
    """`gemini-flash-latest` and a model tuningd does not list are queued, sent to the emulator
    as named, and end as the emulator answers (refused with its 400, or tuned); a client's
    `managed-by` label is kept, sent and shown."""
    client, h = daemon
    latest = await _create(client, "v1", spec("gemini-flash-latest"))
    body = spec(NEW_MODEL)
    body["labels"] = {"managed-by": "terraform"}
    newer = await _create(client, "v1", body)
    assert newer["labels"] == {"managed-by": "terraform"}
    latest_id, newer_id = (v["name"].rsplit("/", 1)[-1] for v in (latest, newer))

    await h.settle()
    assert h.requests("create", "400") == 1
    failed = await _get(client, "v1", latest_id)
    assert failed["state"] == "JOB_STATE_FAILED"
    assert failed["error"]["code"] == 3
    assert "gemini-flash-latest" in failed["error"]["message"]

    (remote,) = h.remote_for(newer_id)
    assert remote.request_body["baseModel"] == NEW_MODEL
    assert remote.request_body["labels"]["managed-by"] == "terraform"
    assert remote.request_body["labels"][LABEL_MANAGED] == "true"
    await h.run_until_ended(newer_id)
    done = await _get(client, "v1", newer_id)
    assert done["state"] == "JOB_STATE_SUCCEEDED" and done["baseModel"] == NEW_MODEL
    assert done["labels"] == {"managed-by": "terraform"}
    assert done["tunedModel"] == (await _emulator_get(h, "v1", remote))["tunedModel"]


LEGACY_LABELS = {LEGACY_LABEL_MANAGED_BY: LEGACY_MANAGED_BY_VALUE}


async def test_job_created_with_the_old_labels_is_adopted_by_reconcile(tmp_path: Path) -> None:
    """A create whose outcome is unknown is reconciled onto a remote job carrying the labels
    tuningd used before issue 8 (managed-by=tuningd, tuningd-job-id), which then runs to its
    end as that job; nothing is created twice."""
    async with open_harness(tmp_path) as h:
        h.set_faults(error_rates={"create": 1.0}, error_statuses={"create": 503})
        job = await h.submit()
        await h.settle()
        assert (await h.job(job.id)).state is LocalState.SUBMITTING
        planted = h.plant_remote(job.id, labels=LEGACY_LABELS)
        h.set_faults()
        await h.run_until_ended(job.id)
        done = await h.job(job.id)
        assert done.state is LocalState.SUCCEEDED and done.remote_id == planted.job_id
        assert [r.job_id for r in h.remote_jobs()] == [planted.job_id]


async def test_sweep_recognises_the_old_labels(tmp_path: Path) -> None:
    """The sweep reports an active remote job labelled managed-by=tuningd with a tuningd-job-id
    no local job has, and ignores a client's own managed-by=tuningd without one."""
    async with open_harness(tmp_path, engine=settings(sweep_interval_s=30),
                            expect_unowned=True) as h:
        stranger = h.plant_remote("0a0b0c0d-old-daemon", labels=LEGACY_LABELS)
        clients = h.plant_remote(None, labels=LEGACY_LABELS)
        await h.submit()
        await h.settle()
        await h.run(31)
        reported = {e["remote_name"].rsplit("/", 1)[-1]
                    for e in h.events("sweep.unowned_remote_job")}
        assert reported == {stranger.job_id}
        assert clients.job_id not in reported
