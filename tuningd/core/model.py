"""Core values of tuningd: local and remote job states and the Job record (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class LocalState(StrEnum):
    """tuningd's own job state, persisted as these lowercase strings (design §2)."""

    QUEUED = "queued"
    SUBMITTING = "submitting"
    PENDING = "pending"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        """Counts against concurrency limits."""
        return self in ACTIVE_STATES


TERMINAL_STATES: frozenset[LocalState] = frozenset(
    {LocalState.SUCCEEDED, LocalState.FAILED, LocalState.CANCELLED}
)
ACTIVE_STATES: frozenset[LocalState] = frozenset(
    {LocalState.SUBMITTING, LocalState.PENDING, LocalState.RUNNING, LocalState.CANCELLING}
)
# States where a remote Vertex job exists (or may exist) and must be polled.
REMOTE_STATES: frozenset[LocalState] = frozenset(
    {LocalState.PENDING, LocalState.RUNNING, LocalState.CANCELLING}
)


class JobState(StrEnum):
    """google.cloud.aiplatform.v1.JobState (wire names; numbers in JOB_STATE_NUMBERS)."""

    JOB_STATE_UNSPECIFIED = "JOB_STATE_UNSPECIFIED"
    JOB_STATE_QUEUED = "JOB_STATE_QUEUED"
    JOB_STATE_PENDING = "JOB_STATE_PENDING"
    JOB_STATE_RUNNING = "JOB_STATE_RUNNING"
    JOB_STATE_SUCCEEDED = "JOB_STATE_SUCCEEDED"
    JOB_STATE_FAILED = "JOB_STATE_FAILED"
    JOB_STATE_CANCELLING = "JOB_STATE_CANCELLING"
    JOB_STATE_CANCELLED = "JOB_STATE_CANCELLED"
    JOB_STATE_PAUSED = "JOB_STATE_PAUSED"
    JOB_STATE_EXPIRED = "JOB_STATE_EXPIRED"
    JOB_STATE_UPDATING = "JOB_STATE_UPDATING"
    JOB_STATE_PARTIALLY_SUCCEEDED = "JOB_STATE_PARTIALLY_SUCCEEDED"


class TuningJobState(StrEnum):
    """v1beta1 TuningJob.tuningJobState: detail of a PENDING/RUNNING job."""

    TUNING_JOB_STATE_UNSPECIFIED = "TUNING_JOB_STATE_UNSPECIFIED"
    TUNING_JOB_STATE_WAITING_FOR_QUOTA = "TUNING_JOB_STATE_WAITING_FOR_QUOTA"
    TUNING_JOB_STATE_PROCESSING_DATASET = "TUNING_JOB_STATE_PROCESSING_DATASET"
    TUNING_JOB_STATE_WAITING_FOR_CAPACITY = "TUNING_JOB_STATE_WAITING_FOR_CAPACITY"
    TUNING_JOB_STATE_TUNING = "TUNING_JOB_STATE_TUNING"
    TUNING_JOB_STATE_POST_PROCESSING = "TUNING_JOB_STATE_POST_PROCESSING"


# Remote state -> local state (design §2). PAUSED/UPDATING keep the job active.
REMOTE_TO_LOCAL: Mapping[JobState, LocalState] = {
    JobState.JOB_STATE_QUEUED: LocalState.PENDING,
    JobState.JOB_STATE_PENDING: LocalState.PENDING,
    JobState.JOB_STATE_RUNNING: LocalState.RUNNING,
    JobState.JOB_STATE_PAUSED: LocalState.RUNNING,
    JobState.JOB_STATE_UPDATING: LocalState.RUNNING,
    JobState.JOB_STATE_CANCELLING: LocalState.CANCELLING,
    JobState.JOB_STATE_SUCCEEDED: LocalState.SUCCEEDED,
    JobState.JOB_STATE_PARTIALLY_SUCCEEDED: LocalState.SUCCEEDED,
    JobState.JOB_STATE_FAILED: LocalState.FAILED,
    JobState.JOB_STATE_EXPIRED: LocalState.FAILED,
    JobState.JOB_STATE_CANCELLED: LocalState.CANCELLED,
}

# Local state -> the Vertex JobState the control API shows (design §8).
LOCAL_TO_REMOTE: Mapping[LocalState, JobState] = {
    LocalState.QUEUED: JobState.JOB_STATE_QUEUED,
    LocalState.SUBMITTING: JobState.JOB_STATE_QUEUED,
    LocalState.PENDING: JobState.JOB_STATE_PENDING,
    LocalState.RUNNING: JobState.JOB_STATE_RUNNING,
    LocalState.CANCELLING: JobState.JOB_STATE_CANCELLING,
    LocalState.SUCCEEDED: JobState.JOB_STATE_SUCCEEDED,
    LocalState.FAILED: JobState.JOB_STATE_FAILED,
    LocalState.CANCELLED: JobState.JOB_STATE_CANCELLED,
}

# Labels tuningd puts on every job it creates, for reconciliation (design §3). Both keys live in
# tuningd's own `tuningd-` namespace, which clients cannot set (the API refuses it), so no label
# of a client's can be taken for ours, and `managed-by` stays the client's (Terraform's...).
LABEL_JOB_ID = "tuningd-job-id"
LABEL_MANAGED = "tuningd-managed"
MANAGED_VALUE = "true"
RESERVED_LABEL_PREFIX = "tuningd-"
# What tuningd before issue 8 put on its jobs instead of LABEL_MANAGED; jobs created then still
# run, so they are recognised too (with their LABEL_JOB_ID, which a client's own
# `managed-by=tuningd` never has).
LEGACY_LABEL_MANAGED_BY = "managed-by"
LEGACY_MANAGED_BY_VALUE = "tuningd"


def ours_labels(job_id: str) -> dict[str, str]:
    """The labels tuningd adds to a job's create body."""
    return {LABEL_JOB_ID: job_id, LABEL_MANAGED: MANAGED_VALUE}


def is_ours(labels: Mapping[str, Any]) -> bool:
    """Whether a remote job's labels say tuningd created it (now, or before issue 8)."""
    if labels.get(LABEL_MANAGED) == MANAGED_VALUE:
        return True
    return (labels.get(LEGACY_LABEL_MANAGED_BY) == LEGACY_MANAGED_BY_VALUE
            and bool(labels.get(LABEL_JOB_ID)))


def client_labels(remote_labels: Mapping[str, Any],
                  sent: Mapping[str, Any]) -> dict[str, Any]:
    """A remote job's labels without those tuningd added (`sent`: the client's own labels)."""
    out = {k: v for k, v in remote_labels.items() if not str(k).startswith(RESERVED_LABEL_PREFIX)}
    if (out.get(LEGACY_LABEL_MANAGED_BY) == LEGACY_MANAGED_BY_VALUE
            and sent.get(LEGACY_LABEL_MANAGED_BY) != LEGACY_MANAGED_BY_VALUE):
        del out[LEGACY_LABEL_MANAGED_BY]  # added by tuningd before issue 8, not by the client
    return out


class Outcome(StrEnum):
    """How a terminal job ended, beyond its state; persisted."""

    NORMAL = "normal"
    COMPLETED_DESPITE_CANCEL = "completed_despite_cancel"
    FAILED_DESPITE_CANCEL = "failed_despite_cancel"
    CANCELLED_LOCALLY = "cancelled_locally"
    REJECTED = "rejected"
    REMOTE_LOST = "remote_lost"


@dataclass(frozen=True)
class Job:
    """One accepted tuning request and everything tuningd knows about it.

    Times are Unix seconds (float). `spec_json` is the normalized TuningJob create body
    (camelCase proto3 JSON, without tuningd's own labels); `remote_json` is the last TuningJob
    Vertex returned for it, normalized the same way.
    """

    id: str
    project: str
    location: str
    spec_json: str
    base_model: str
    state: LocalState
    created_at: float
    updated_at: float
    priority: int = 0
    request_id: str | None = None
    display_name: str = ""
    attempts: int = 0
    remote_name: str | None = None
    remote_state: str | None = None
    remote_substate: str | None = None
    remote_json: str | None = None
    cancel_requested: bool = False
    cancel_sent_at: float | None = None
    next_action_at: float = 0.0
    poll_interval_s: float = 0.0
    retry_count: int = 0
    submit_started_at: float | None = None
    submitted_at: float | None = None
    ended_at: float | None = None
    error_code: int | None = None
    error_message: str | None = None
    outcome: Outcome | None = None
    remote_update_time: str | None = None
    # When the last create attempt ended without a known outcome (timeout, reset, 5xx, crash):
    # a late-landing create is waited for from here, not from when the attempt began.
    attempt_ended_at: float | None = None
    # Consecutive reconcile lists that found no remote job for this submitting job.
    absent_checks: int = 0
    # Consecutive reads that answered 404 for this job's remote job (confirmed before "lost").
    missing_checks: int = 0
    # The Vertex API version ("v1", "v1beta1") the create came in on: the job is created, polled,
    # reconciled and cancelled upstream at it. None for jobs stored before tuningd remembered
    # it; those keep the configured default (vertex.api_version), as they were created with it.
    api_version: str | None = None
    # The last error an event brought (google.rpc code, message, when), whatever became of the
    # job after it: kept, not cleared on success, since its time says how old it is. None for
    # jobs that never met one (and for jobs stored before tuningd kept it).
    last_error_code: int | None = None
    last_error_message: str | None = None
    last_error_at: float | None = None

    @property
    def spec(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.spec_json)
        return value

    @property
    def remote(self) -> dict[str, Any] | None:
        if self.remote_json is None:
            return None
        value: dict[str, Any] = json.loads(self.remote_json)
        return value

    @property
    def labels(self) -> dict[str, str]:
        labels = self.spec.get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    @property
    def remote_id(self) -> str | None:
        """The Vertex job id (the part after /tuningJobs/), stable across project id/number."""
        if not self.remote_name:
            return None
        return self.remote_name.rsplit("/", 1)[-1]

    def evolve(self, **changes: Any) -> Job:
        return replace(self, **changes)


@dataclass(frozen=True)
class JobEvent:
    """One row of a job's history: a stored transition."""

    job_id: str
    seq: int
    at: float
    from_state: LocalState | None
    to_state: LocalState
    reason: str
    detail: Mapping[str, Any] = field(default_factory=dict)
