"""The TuningJob view of a job: what Vertex returned for it (or the request as accepted), under
tuningd's own name, state and times, with the `tuningd` extension object."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tuningd.core import recovery
from tuningd.core.errors import Code
from tuningd.core.model import LOCAL_TO_REMOTE, Job, JobEvent, LocalState, client_labels
from tuningd.vertex import wire

# TuningJob.error is "only populated when job's state is FAILED or CANCELLED" (spec §2).
_ERROR_STATES: frozenset[LocalState] = frozenset({LocalState.FAILED, LocalState.CANCELLED})
CANCELLED_ERROR: Mapping[str, Any] = {
    "code": int(Code.CANCELLED), "message": "Tuning job was cancelled.",
}


# --------------------------------------------------------------------------------------------
# The TuningJob view of a Job (pure)


def job_name(job: Job) -> str:
    """tuningd's own resource name of a job, with the project as given at submit time."""
    return f"projects/{job.project}/locations/{job.location}/tuningJobs/{job.id}"


def job_view(job: Job, *, queue_position: int | None = None,
             history: Sequence[JobEvent] | None = None,
             pause: recovery.Pause | None = None,
             now: float | None = None) -> dict[str, Any]:
    """The canonical TuningJob a client sees for a job, plus the `tuningd` extension object under
    the key "tuningd" (history included only when given).

    Once Vertex has the job, it is what Vertex last returned for it, nothing added: tuningd's
    labels are taken out. Before, it is the request as accepted. Either way `name`, `state`
    (design §8: queued and submitting show as JOB_STATE_QUEUED), `createTime` and `updateTime`
    are tuningd's own resource's, and a job that ended without Vertex's word (cancelled while
    queued, refused at create, lost) shows tuningd's `error` and `endTime`.

    `now` (default: the wall clock) decides whether the job waits for a time (see
    next_attempt_at)."""
    spec = job.spec
    remote = job.remote
    if remote is None:
        view = wire.strip_output_only(spec)
    else:
        view = dict(remote)
        labels = client_labels(remote.get("labels") or {}, spec.get("labels") or {})
        view.pop("labels", None)
        if labels:
            view["labels"] = labels
    view["name"] = job_name(job)
    view["state"] = LOCAL_TO_REMOTE[job.state].value
    view["createTime"] = wire.format_timestamp(job.created_at)
    view["updateTime"] = wire.format_timestamp(job.updated_at)
    # TuningJob.error is "only populated when job's state is FAILED or CANCELLED" (spec §2).
    view.pop("error", None)
    if job.state in _ERROR_STATES:
        view["error"] = (remote or {}).get("error") or _local_error(job)
    if job.state.is_terminal and "endTime" not in view and job.ended_at is not None:
        view["endTime"] = wire.format_timestamp(job.ended_at)
    view["tuningd"] = _extension(job, queue_position=queue_position, history=history)
    _add_waiting(view["tuningd"], job, pause, now)
    return view


def _add_waiting(ext: dict[str, Any], job: Job, pause: recovery.Pause | None,
                 now: float | None) -> None:
    """The `tuningd` object's last error, next attempt and paused creates (job_view and
    render_queued alike)."""
    if job.last_error_code is not None and job.state is not LocalState.SUCCEEDED:
        ext["lastError"] = last_error(job)
    attempt_at = next_attempt_at(job, pause, time.time() if now is None else now)
    if attempt_at is not None:
        ext["nextAttemptTime"] = wire.format_timestamp(attempt_at)
    if pause is not None and job.state is LocalState.QUEUED:
        # Why a queued job does not move: creates to its project and location are paused.
        ext["createsPaused"] = _paused(pause)


def _paused(pause: recovery.Pause) -> dict[str, Any]:
    return {"status": pause.status, "message": pause.message,
            "since": wire.format_timestamp(pause.since),
            "nextProbeTime": wire.format_timestamp(pause.probe_at)}


def last_error(job: Job) -> dict[str, Any]:
    """The job's last recorded error as the `tuningd.lastError` object."""
    code = job.last_error_code if job.last_error_code is not None else int(Code.UNKNOWN)
    try:
        status = Code(code).name
    except ValueError:
        status = Code.UNKNOWN.name
    error: dict[str, Any] = {"code": code, "status": status,
                             "message": job.last_error_message or ""}
    if job.last_error_at is not None:
        error["time"] = wire.format_timestamp(job.last_error_at)
    return error


def next_attempt_at(job: Job, pause: recovery.Pause | None, now: float) -> float | None:
    """When tuningd next acts on a job that waits for a time: its retry, reconcile or poll
    (`next_action_at`), or for a queued job whose place's creates are paused, the probe.

    None for an ended job and for one that is due (a queued job waiting only for capacity, an
    action under way): no time would be true for them."""
    if job.state.is_terminal:
        return None
    at = job.next_action_at
    if pause is not None and job.state is LocalState.QUEUED:
        at = max(at, pause.probe_at)
    return at if at > now else None


def _local_error(job: Job) -> dict[str, Any]:
    if job.error_code is None and job.state is LocalState.CANCELLED:
        return dict(CANCELLED_ERROR)
    code = job.error_code if job.error_code is not None else int(Code.UNKNOWN)
    message = job.error_message or (
        "Tuning job was cancelled." if job.state is LocalState.CANCELLED else "Tuning job failed."
    )
    return {"code": code, "message": message}


def _extension(job: Job, *, queue_position: int | None,
               history: Sequence[JobEvent] | None) -> dict[str, Any]:
    ext: dict[str, Any] = {
        "state": job.state.value,
        "priority": job.priority,
        "attempts": job.attempts,
        "cancelRequested": job.cancel_requested,
    }
    optional: dict[str, Any] = {
        "remoteName": job.remote_name,
        "remoteState": job.remote_state,
        "remoteSubstate": job.remote_substate,
        "queuePosition": queue_position if job.state is LocalState.QUEUED else None,
        "requestId": job.request_id,
        "outcome": job.outcome.value if job.outcome is not None else None,
        "apiVersion": job.api_version,
    }
    ext.update({k: v for k, v in optional.items() if v is not None})
    if history is not None:
        ext["history"] = [history_entry(ev) for ev in history]
    return ext


def history_entry(event: JobEvent) -> dict[str, Any]:
    """One stored transition as JSON: time, from (null for the first), to, reason."""
    entry: dict[str, Any] = {
        "time": wire.format_timestamp(event.at),
        "from": event.from_state.value if event.from_state is not None else None,
        "to": event.to_state.value,
        "reason": event.reason,
    }
    if event.detail:
        entry["detail"] = dict(event.detail)
    return entry


def render_queued(job: Job, spec: Mapping[str, Any], *, queue_position: int | None,
                  pause: recovery.Pause | None, enum_as_int: bool = False,
                  api_version: str = "v1", now: float | None = None) -> dict[str, Any]:
    """render_view(job_view(job, ...)) of a job that is only queued (never sent: no remote),
    built from `spec`, the canonical spec its create parsed, validated and stored.

    The answer of every create: the same content, in the same order (so the same bytes), as the
    general path, which reads the stored spec text back and renders the whole view; here only
    the spec is rendered, and tuningd's name, state, times and object are set as they are."""
    if job.state is not LocalState.QUEUED or job.remote_json is not None:
        raise ValueError(f"render_queued() needs a queued job never sent; {job.id} is "
                         f"{job.state.value}")
    # The general path reads the spec from its stored text, whose keys json.dumps sorted.
    rendered: dict[str, Any] = _sorted(wire.render_tuning_job(spec, enum_as_int=enum_as_int,
                                              api_version=api_version))
    created = wire.format_timestamp(job.created_at)
    rendered["name"] = job_name(job)
    rendered["state"] = _queued_state(enum_as_int)
    rendered["createTime"] = created
    rendered["updateTime"] = (created if job.updated_at == job.created_at
                              else wire.format_timestamp(job.updated_at))
    ext = _extension(job, queue_position=queue_position, history=None)
    _add_waiting(ext, job, pause, now)
    rendered["tuningd"] = ext
    return rendered


def _sorted(value: Any) -> Any:
    """A JSON value with every object's keys in sorted order (as json.dumps(sort_keys=True))."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


@functools.cache
def _queued_state(enum_as_int: bool) -> Any:
    state = LOCAL_TO_REMOTE[LocalState.QUEUED].value
    return wire.render_tuning_job({"state": state}, enum_as_int=enum_as_int)["state"]


def render_view(view: Mapping[str, Any], *, enum_as_int: bool = False,
                api_version: str = "v1") -> dict[str, Any]:
    """Proto3 JSON of a job_view(): the TuningJob rendered by wire, then the `tuningd` object."""
    body = {k: v for k, v in view.items() if k != "tuningd"}
    rendered = wire.render_tuning_job(body, enum_as_int=enum_as_int, api_version=api_version)
    if "tuningd" in view:
        rendered["tuningd"] = view["tuningd"]
    return rendered
