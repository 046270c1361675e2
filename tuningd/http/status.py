"""The status JSON (`GET /v1/tuningd/status`, read by `tuningd status`) and its OpenAPI schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuningd.core import limits
from tuningd.core.model import Job, LocalState
from tuningd.core.overview import ActiveJob, LimitUse, Overview, PausedCreates, QueuedJob
from tuningd.http.jobview import job_name, job_view
from tuningd.vertex import wire

__all__ = ["STATUS_SCHEMAS", "full_scopes", "job_reasons", "scope_name", "status_json",
           "waiting_for"]


def _time(unix_s: float | None) -> str | None:
    return None if unix_s is None else wire.format_timestamp(unix_s)


def scope_name(scope: limits.Scope) -> str:
    """A limit's scope as the status shows it: global, locations/L or baseModel/M."""
    if scope.kind is limits.ScopeKind.GLOBAL:
        return "global"
    if scope.kind is limits.ScopeKind.LOCATION:
        return f"locations/{scope.name}"
    return f"baseModel/{scope.name}"


def job_reasons(job: Job, view: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`lastError` and `nextAttemptTime` of the job view's tuningd object, when it has them
    (the job's reasons: why it waits or was retried)."""
    ext = (view if view is not None else job_view(job))["tuningd"]
    return {key: ext[key] for key in ("lastError", "nextAttemptTime") if key in ext}


def _job(job: Job, view: Mapping[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": job.id, "name": job_name(job), "displayName": job.display_name,
        "state": job.state.value, "baseModel": job.base_model, "priority": job.priority,
        "createTime": wire.format_timestamp(job.created_at),
    }
    entry.update(job_reasons(job, view))
    return entry


def full_scopes(ov: Overview) -> dict[limits.Scope, LimitUse]:
    """The limits with no room left (every active slot taken)."""
    return {use.scope: use for use in ov.limits if use.active >= use.limit}


def waiting_for(job: Job, full: Mapping[limits.Scope, LimitUse]) -> list[str]:
    """The full limits a queued job counts in (what it waits for), by scope name."""
    return [scope_name(scope) for scope in limits.scopes_of(job) if scope in full]


def _queued(entry: QueuedJob, full: Mapping[limits.Scope, LimitUse]) -> dict[str, Any]:
    out = {**_job(entry.job), "queuePosition": entry.position}
    waits = waiting_for(entry.job, full)
    if waits:
        out["waitingFor"] = waits
    return out


def _active(entry: ActiveJob) -> dict[str, Any]:
    job = entry.job
    out = {**_job(job), "since": wire.format_timestamp(entry.since),
           "elapsedSeconds": round(entry.elapsed_s, 3)}
    optional = {"remoteName": job.remote_name, "remoteState": job.remote_state,
                "remoteSubstate": job.remote_substate}
    out.update({k: v for k, v in optional.items() if v is not None})
    if job.cancel_requested:
        out["cancelRequested"] = True
    return out


def _failure(job: Job) -> dict[str, Any]:
    view = job_view(job)
    return {**_job(job, view), "endTime": _time(job.ended_at), "error": view.get("error") or {}}


def _limit(use: LimitUse) -> dict[str, Any]:
    out: dict[str, Any] = {"scope": scope_name(use.scope), "kind": use.scope.kind.value,
                           "active": use.active, "limit": use.limit}
    if use.configured != use.limit:
        # Lowered after create 429s (adaptive); null: the scope has no configured cap.
        out["configuredLimit"] = use.configured
    return out


def _paused(entry: PausedCreates) -> dict[str, Any]:
    pause = entry.pause
    return {"project": entry.project, "location": entry.location, "status": pause.status,
            "message": pause.message, "since": wire.format_timestamp(pause.since),
            "nextProbeTime": wire.format_timestamp(pause.probe_at),
            "failures": pause.failures, "probing": pause.probing}


def status_json(ov: Overview) -> dict[str, Any]:
    """The agreed status shape (version, role, counts, queue, limits, pausedCreates,
    lastSuccessfulPollTime) plus the lists the status page shows."""
    full = full_scopes(ov)
    return {
        "version": ov.version,
        "role": ov.role.value,
        "time": wire.format_timestamp(ov.at),
        "counts": {state.value: ov.counts.get(state, 0) for state in LocalState},
        "queue": {"depth": ov.queue_depth, "oldestQueuedTime": _time(ov.oldest_queued_at)},
        "limits": [_limit(use) for use in ov.limits],
        "pausedCreates": [_paused(p) for p in ov.paused],
        "lastSuccessfulPollTime": _time(ov.last_poll_at),
        "queued": [_queued(q, full) for q in ov.queued],
        "active": [_active(a) for a in ov.active],
        "recentFailures": [_failure(job) for job in ov.recent_failures],
    }


# --------------------------------------------------------------------------------------------
# OpenAPI


_TIME: Mapping[str, Any] = {"type": "string", "format": "date-time"}
_NULLABLE_TIME: Mapping[str, Any] = {**_TIME, "nullable": True}
_STATUS_JOB: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "displayName", "state", "baseModel", "priority", "createTime"],
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "displayName": {"type": "string"},
        "state": {"type": "string", "enum": [s.value for s in LocalState]},
        "baseModel": {"type": "string"}, "priority": {"type": "integer"},
        "createTime": _TIME,
        "lastError": {"type": "object", "description": "the job's last error (code, status, "
                      "message, time), when it has one"},
        "nextAttemptTime": {**_TIME, "description": "when the job acts next after an error"},
        "queuePosition": {"type": "integer", "minimum": 1},
        "waitingFor": {"type": "array", "items": {"type": "string"},
                       "description": "queued: the scopes of the job whose limit is full"},
        "since": {**_TIME, "description": "when its first create started"},
        "elapsedSeconds": {"type": "number", "minimum": 0},
        "remoteName": {"type": "string"}, "remoteState": {"type": "string"},
        "remoteSubstate": {"type": "string"}, "cancelRequested": {"type": "boolean"},
        "endTime": _NULLABLE_TIME,
        "error": {"type": "object", "description": "google.rpc.Status"},
    },
}

STATUS_SCHEMAS: dict[str, Any] = {
    "TuningdStatus": {
        "type": "object",
        "description": "This instance at a glance (tuningd extension; `tuningd status`).",
        "required": ["version", "role", "counts", "queue", "limits", "pausedCreates",
                     "lastSuccessfulPollTime"],
        "properties": {
            "version": {"type": "string"},
            "role": {"type": "string", "enum": ["single", "leader", "standby"]},
            "time": _TIME,
            "counts": {"type": "object", "description": "jobs per local state",
                       "properties": {s.value: {"type": "integer", "minimum": 0}
                                      for s in LocalState}},
            "queue": {"type": "object", "required": ["depth", "oldestQueuedTime"],
                      "properties": {"depth": {"type": "integer", "minimum": 0},
                                     "oldestQueuedTime": _NULLABLE_TIME}},
            "limits": {"type": "array", "items": {
                "type": "object", "required": ["scope", "active", "limit"],
                "properties": {
                    "scope": {"type": "string",
                              "description": "global, locations/{location} or "
                                             "baseModel/{model}"},
                    "kind": {"type": "string", "enum": [k.value for k in limits.ScopeKind]},
                    "active": {"type": "integer", "minimum": 0},
                    "limit": {"type": "integer", "minimum": 1},
                    "configuredLimit": {"type": "integer", "nullable": True,
                                        "description": "present while create 429s have "
                                                       "lowered the limit"}}}},
            "pausedCreates": {"type": "array", "items": {
                "type": "object",
                "required": ["project", "location", "status", "message", "since",
                             "nextProbeTime"],
                "properties": {"project": {"type": "string"}, "location": {"type": "string"},
                               "status": {"type": "string"}, "message": {"type": "string"},
                               "since": _TIME, "nextProbeTime": _TIME,
                               "failures": {"type": "integer"},
                               "probing": {"type": "boolean"}}}},
            "lastSuccessfulPollTime": _NULLABLE_TIME,
            "queued": {"type": "array", "items": _STATUS_JOB,
                       "description": "the head of the queue (at most 50), first first"},
            "active": {"type": "array", "items": _STATUS_JOB},
            "recentFailures": {"type": "array", "items": _STATUS_JOB,
                               "description": "failed within 24 h, newest first (at most 20)"},
        },
    },
}
