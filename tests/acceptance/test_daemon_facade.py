"""Acceptance: issue 8's breakages 1 and 4 through a real `tuningd serve` and emulator process:
a job goes to Vertex at its client's version, as sent, and comes back as Vertex shows it; models
tuningd does not list are Vertex's to judge; `managed-by` is the client's label."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import (
    EmulatorProc,
    Processes,
    http,
    job_body,
    job_id_of,
    ok_json,
    remote_jobs_by_label,
    wait_until,
)

pytestmark = [pytest.mark.acceptance]

# tuningd's own resource fields in a view; everything else must be exactly Vertex's.
OWN_FIELDS = ("name", "state", "createTime", "updateTime", "labels", "tuningd")
BETA_HYPERPARAMETERS = {"epochCount": "2", "learningRate": 0.0002, "batchSize": "16"}


def _vertex_part(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in OWN_FIELDS}


def _remote(emu: EmulatorProc, job_id: str) -> dict[str, Any] | None:
    found = remote_jobs_by_label(emu.state()).get(job_id, [])
    return found[0] if found else None


def test_v1beta1_fields_reach_vertex_and_get_shows_vertexs_copy(procs: Processes) -> None:
    """A v1beta1 create with learningRate, batchSize, tuningMode and outputUri reaches the
    emulator at v1beta1 with all four (they were dropped by a v1 upstream), and the finished
    job read through tuningd is the emulator's own v1beta1 GET, with no learningRateMultiplier
    merged in beside learningRate."""
    emu = procs.emulator(job_seconds=1.0, pending_seconds=0.2)
    daemon = procs.daemon(emu.url)  # vertex.api_version left at its default, v1
    body = job_body("beta-fields", outputUri="gs://acc-bucket/out/",
                    labels={"managed-by": "terraform"})
    body["supervisedTuningSpec"].update(tuningMode="TUNING_MODE_FULL",
                                        hyperParameters=BETA_HYPERPARAMETERS)
    created = ok_json(daemon.call("POST", daemon.collection_url(version="v1beta1"), body=body))
    job_id = job_id_of(created)

    def ended() -> dict[str, Any] | None:
        view: dict[str, Any] = ok_json(daemon.call(
            "GET", f"{daemon.collection_url(version='v1beta1')}/{job_id}"))
        return view if view["tuningd"]["state"] == "succeeded" else None

    done = wait_until(ended, 60, message=lambda: f"the job to succeed\n{daemon.tail()}")
    remote = _remote(emu, job_id)
    assert remote is not None and remote["apiVersion"] == "v1beta1"
    sent = remote["request"]
    assert sent["outputUri"] == "gs://acc-bucket/out/"
    assert sent["supervisedTuningSpec"]["tuningMode"] == "TUNING_MODE_FULL"
    assert sent["supervisedTuningSpec"]["hyperParameters"] == BETA_HYPERPARAMETERS
    assert sent["labels"]["managed-by"] == "terraform"

    vertex_view = ok_json(http("GET", f"{emu.url}/v1beta1/{done['tuningd']['remoteName']}"))
    assert _vertex_part(done) == _vertex_part(vertex_view)
    hyper = done["supervisedTuningSpec"]["hyperParameters"]
    assert "learningRateMultiplier" not in hyper or "learningRate" not in hyper
    assert done["labels"] == {"managed-by": "terraform"}
    assert done["tuningd"]["apiVersion"] == "v1beta1"


def test_models_tuningd_does_not_list_are_vertexs_to_judge(procs: Processes) -> None:
    """`gemini-flash-latest` (google-genai's docstring example) and a made-up future model are
    queued, not refused locally (they were a local 400), sent to the emulator as named, and
    end as the emulator answers them: its 400 becomes the job's error."""
    emu = procs.emulator(job_seconds=1.0, pending_seconds=0.2)
    daemon = procs.daemon(emu.url)
    ids = [job_id_of(daemon.submit(job_body(baseModel=model)))
           for model in ("gemini-flash-latest", "gemini-9-flash-preview")]

    def failed(job_id: str) -> dict[str, Any] | None:
        view = daemon.job(job_id)
        return view if view["tuningd"]["state"] == "failed" else None

    for job_id, model in zip(ids, ("gemini-flash-latest", "gemini-9-flash-preview"),
                             strict=True):
        view = wait_until(lambda job_id=job_id: failed(job_id), 60,  # type: ignore[misc]
                          message=lambda: f"the emulator's answer\n{daemon.tail()}")
        assert view["error"]["code"] == 3 and model in view["error"]["message"]
    # Both were asked of Vertex, which refused them: nothing was made there.
    assert emu.state()["requestCounts"]["create"].get("400") == 2
    assert _remote(emu, ids[0]) is None and _remote(emu, ids[1]) is None
