"""A job's canonical wire view at one moment (now, or an earlier transition for lagged lists)."""

from __future__ import annotations

import copy
import math
from typing import Any

from tuningd.core.model import JobState
from tuningd.emulator.jobs import (
    TUNING_END,
    WAITING_FOR_CAPACITY_END,
    EmulatedJob,
    Phase,
    VisibleMoment,
)
from tuningd.vertex import wire


def job_name(project_number: str, job: EmulatedJob) -> str:
    return f"projects/{project_number}/locations/{job.location}/tuningJobs/{job.job_id}"


def render_view(job: EmulatedJob, moment: VisibleMoment, *, project_number: str, run_s: float,
                now_s: float) -> dict[str, Any]:
    """The job as it looked in `moment`; now_s only places TUNING progress (completed epochs)."""
    out = copy.deepcopy(job.spec)
    out["name"] = job_name(project_number, job)
    out["state"] = moment.state.value
    out["createTime"] = wire.format_timestamp(job.create_s)
    out["updateTime"] = wire.format_timestamp(moment.at_s)
    if moment.start_s is not None:
        out["startTime"] = wire.format_timestamp(moment.start_s)
        digits = "".join(ch for ch in wire.format_timestamp(job.create_s) if ch.isdigit())
        out["experiment"] = (f"projects/{project_number}/locations/{job.location}/"
                             f"metadataStores/default/contexts/tuning-experiment-{digits}")
    if moment.end_s is not None:
        out["endTime"] = wire.format_timestamp(moment.end_s)
    kind = wire.tuning_kind(out)
    if moment.hyper_parameters is not None and kind is not None and moment.hyper_parameters:
        out[kind] = {**out[kind], "hyperParameters": dict(moment.hyper_parameters)}
    if moment.tuning_job_state is not None:
        out["tuningJobState"] = moment.tuning_job_state.value
    if moment.error is not None:
        out["error"] = dict(moment.error)
    if moment.stats is not None and moment.phase in (Phase.TUNING, Phase.POST_PROCESSING,
                                                     Phase.ENDED):
        out["tuningDataStats"] = copy.deepcopy(dict(moment.stats))
    metadata = _metadata(moment, run_s, now_s)
    if metadata:
        out["tuningJobMetadata"] = metadata
    if moment.state == JobState.JOB_STATE_SUCCEEDED:
        out["tunedModel"] = _tuned_model(job, moment, project_number)
    return out


def _epochs(moment: VisibleMoment) -> int:
    return int((moment.hyper_parameters or {}).get("epochCount", 1))


def _metadata(moment: VisibleMoment, run_s: float, now_s: float) -> dict[str, int]:
    if moment.start_s is None or moment.stats is None:
        return {}
    epochs = _epochs(moment)
    if moment.phase == Phase.TUNING:
        tuning_start = moment.start_s + WAITING_FOR_CAPACITY_END * run_s
        span = (TUNING_END - WAITING_FOR_CAPACITY_END) * run_s
        done_fraction = min(1.0, (now_s - tuning_start) / span) if span > 0 else 1.0
    elif (moment.phase == Phase.POST_PROCESSING
          or moment.state == JobState.JOB_STATE_SUCCEEDED):
        done_fraction = 1.0
    else:
        return {}
    result = {"completedEpochCount": math.floor(epochs * done_fraction),
              "completedStepCount": math.floor(moment.step_count * done_fraction)}
    return {k: v for k, v in result.items() if v}


def _tuned_model(job: EmulatedJob, moment: VisibleMoment, project_number: str) -> dict[str, Any]:
    prefix = f"projects/{project_number}/locations/{job.location}"
    endpoint = f"{prefix}/endpoints/{job.endpoint_id}"
    model: dict[str, Any] = {"model": f"{prefix}/models/{job.model_id}@1", "endpoint": endpoint}
    kind = wire.tuning_kind(job.spec)
    spec = (job.spec.get(kind) if kind else None) or {}
    if not spec.get("exportLastCheckpointOnly", False):
        epochs = _epochs(moment)
        steps_per_epoch = max(1, moment.step_count // max(epochs, 1))
        checkpoints = []
        for epoch in range(1, epochs + 1):
            ids = job.checkpoint_endpoint_ids
            ckpt_id = ids[(epoch - 1) % len(ids)]
            ckpt_endpoint = endpoint if epoch == epochs else f"{prefix}/endpoints/{ckpt_id}"
            checkpoints.append({"checkpointId": str(epoch), "epoch": epoch,
                                "step": epoch * steps_per_epoch, "endpoint": ckpt_endpoint})
        model["checkpoints"] = checkpoints
    return model
