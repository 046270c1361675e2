"""`tuningd show`: one job as labelled lines, with its reasons and its history."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tuningd.client.jobs import duration, local_state, parse_time, short_time, substate
from tuningd.client.render import grid, to_text

_OTHER_SPECS = frozenset({"preferenceOptimizationSpec", "distillationSpec"})


def _when(timestamp: Any, now: float) -> str | None:
    """A timestamp with how far it is from now ("in 12s", "3m04s ago")."""
    at = parse_time(timestamp)
    if at is None:
        return None
    delta = at - now
    return f"{timestamp} ({'in ' + duration(delta) if delta > 0 else duration(-delta) + ' ago'})"


def _last_error(ext: Mapping[str, Any]) -> str | None:
    last = ext.get("lastError")
    if not isinstance(last, Mapping):
        return None
    head = " ".join(str(p) for p in (last.get("status"), f"({last['code']})"
                                     if "code" in last else None) if p)
    at = f" at {short_time(last['time'])}" if last.get("time") else ""
    return f"{head}: {last.get('message', '')}{at}"


def _paused(ext: Mapping[str, Any], now: float) -> str | None:
    paused = ext.get("createsPaused")
    if not isinstance(paused, Mapping):
        return None
    probe = _when(paused.get("nextProbeTime"), now)
    return (f"{paused.get('status', '')}: {paused.get('message', '')} (since "
            f"{short_time(paused.get('since'))}" + (f", next probe {probe})" if probe else ")"))


def format_job_details(job: Mapping[str, Any], now: float | None = None) -> str:
    """A readable multi-line description of one job, with its history when present."""
    now = time.time() if now is None else now
    ext: Mapping[str, Any] = job.get("tuningd") or {}
    # Whichever tuning spec the job sets (supervised, preference, distillation...), by Vertex's
    # naming rather than the codec's list: the client talks to the daemon over HTTP only.
    kind = next((key for key in job if key.endswith("TuningSpec") or key in _OTHER_SPECS), None)
    spec: Mapping[str, Any] = job.get(kind) or {} if kind else {}
    tuned: Mapping[str, Any] = job.get("tunedModel") or {}
    error: Mapping[str, Any] = job.get("error") or {}
    fields: list[tuple[str, Any]] = [
        ("name", job.get("name")),
        ("state", f"{local_state(job)} ({job.get('state', '-')})"),
        ("sub-state", substate(job)),
        ("display name", job.get("tunedModelDisplayName")),
        ("description", job.get("description")),
        ("base model", job.get("baseModel")),
        ("custom base model", job.get("customBaseModel")),
        ("pre-tuned model", (job.get("preTunedModel") or {}).get("tunedModelName")),
        ("tuning kind", kind.removesuffix("Spec") if kind else None),
        ("training data", spec.get("trainingDatasetUri") or spec.get("promptDatasetUri")),
        ("validation data", spec.get("validationDatasetUri")),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted((job.get("labels") or {}).items()))),
        ("priority", ext.get("priority")),
        ("queue position", ext.get("queuePosition")),
        ("attempts", ext.get("attempts")),
        ("last error", _last_error(ext)),
        ("next attempt", _when(ext.get("nextAttemptTime"), now)),
        ("creates paused", _paused(ext, now)),
        ("request id", ext.get("requestId")),
        ("cancel requested", "yes" if ext.get("cancelRequested") else None),
        ("outcome", ext.get("outcome")),
        ("remote name", ext.get("remoteName")),
        ("remote state", " / ".join(
            str(s) for s in (ext.get("remoteState"), ext.get("remoteSubstate")) if s)),
        ("created", job.get("createTime")),
        ("updated", job.get("updateTime")),
        ("started", job.get("startTime")),
        ("ended", job.get("endTime")),
        ("tuned model", tuned.get("model")),
        ("endpoint", tuned.get("endpoint")),
        ("error", f"code {error.get('code', 0)}: {error.get('message', '')}" if error else None),
    ]
    shown = [(label, str(value)) for label, value in fields if value not in (None, "")]
    width = max(len(label) for label, _ in shown) + 1
    lines = [f"{(label + ':').ljust(width)}  {value}" for label, value in shown]
    history = ext.get("history")
    if history:
        rows = [[short_time(h.get("time")), str(h.get("from") or "-"), str(h.get("to", "-")),
                 str(h.get("reason", ""))] for h in history]
        lines += ["", to_text(grid(("TIME", "FROM", "TO", "REASON"), rows, title="HISTORY"))]
    return "\n".join(lines)
