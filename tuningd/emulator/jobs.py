"""The emulator's job records: phases, visible transitions (with the view they show), pending
late creates and the one-minute rate window."""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tuningd.core.model import JobState, TuningJobState
from tuningd.vertex import wire

# Share of job_seconds spent in each RUNNING sub-state (their ends, cumulative).
PROCESSING_DATASET_END = 0.1
WAITING_FOR_CAPACITY_END = 0.2
TUNING_END = 0.9

CANCELLED_MESSAGE = "Tuning job was cancelled."
TERMINAL: frozenset[JobState] = frozenset({
    JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED,
    JobState.JOB_STATE_EXPIRED,
})


class Phase(StrEnum):
    """Where a job is on its own timeline; the visible state also depends on cancellation."""

    WAITING_FOR_QUOTA = "waiting_for_quota"
    PENDING = "pending"  # holds a quota slot, not started yet
    PROCESSING_DATASET = "processing_dataset"
    WAITING_FOR_CAPACITY = "waiting_for_capacity"
    TUNING = "tuning"
    POST_PROCESSING = "post_processing"
    ENDED = "ended"


_RUNNING_SUBSTATE: Mapping[Phase, TuningJobState] = {
    Phase.PROCESSING_DATASET: TuningJobState.TUNING_JOB_STATE_PROCESSING_DATASET,
    Phase.WAITING_FOR_CAPACITY: TuningJobState.TUNING_JOB_STATE_WAITING_FOR_CAPACITY,
    Phase.TUNING: TuningJobState.TUNING_JOB_STATE_TUNING,
    Phase.POST_PROCESSING: TuningJobState.TUNING_JOB_STATE_POST_PROCESSING,
}


def sub_state(state: JobState, phase: Phase) -> TuningJobState | None:
    """The v1beta1 tuningJobState shown for a (state, phase) pair."""
    if state == JobState.JOB_STATE_PENDING and phase == Phase.WAITING_FOR_QUOTA:
        return TuningJobState.TUNING_JOB_STATE_WAITING_FOR_QUOTA
    if state == JobState.JOB_STATE_RUNNING:
        return _RUNNING_SUBSTATE.get(phase)
    return None


@dataclass(frozen=True, slots=True)
class VisibleMoment:
    """One visible change of an emulated Vertex job and everything its view showed from then on.

    Not the daemon's machine.Transition (a local job's before/after and the history row to write):
    this is what Vertex's answers showed, kept so that lagged lists can show the past.

    The view fields hold shared references: the job replaces those values, never mutates them,
    so keeping one VisibleMoment per change costs a few pointers (this is what lagged lists read).
    """

    at_s: float
    state: JobState
    tuning_job_state: TuningJobState | None
    reason: str
    phase: Phase = Phase.WAITING_FOR_QUOTA
    start_s: float | None = None
    end_s: float | None = None
    error: Mapping[str, Any] | None = None
    hyper_parameters: Mapping[str, Any] | None = None
    stats: Mapping[str, Any] | None = None
    step_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"at": wire.format_timestamp(self.at_s), "state": self.state.value,
                "tuningJobState": self.tuning_job_state.value if self.tuning_job_state else None,
                "reason": self.reason}


@dataclass
class EmulatedJob:
    """One tuning job as the emulated service holds it (mutable entity, not a value)."""

    seq: int
    job_id: str
    location: str
    api_version: str
    project_in_path: str
    request_body: Any
    spec: dict[str, Any]
    create_s: float
    model_id: str
    endpoint_id: str
    checkpoint_endpoint_ids: tuple[str, ...]
    update_s: float = 0.0
    state: JobState = JobState.JOB_STATE_PENDING
    phase: Phase = Phase.WAITING_FOR_QUOTA
    slot_s: float | None = None
    start_s: float | None = None
    end_s: float | None = None
    cancel_s: float | None = None
    cancel_completes: bool = False
    hyper_parameters: dict[str, Any] | None = None
    dataset_error: str | None = None
    stats: dict[str, Any] | None = None
    step_count: int = 0
    error: dict[str, Any] | None = None
    transitions: list[VisibleMoment] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

    @property
    def tuning_job_state(self) -> TuningJobState | None:
        return sub_state(self.state, self.phase)

    def moment(self, reason: str = "") -> VisibleMoment:
        """The job's visible fields right now, as a VisibleMoment at update_s."""
        return VisibleMoment(self.update_s, self.state, self.tuning_job_state, reason,
                          phase=self.phase, start_s=self.start_s, end_s=self.end_s,
                          error=self.error, hyper_parameters=self.hyper_parameters,
                          stats=self.stats, step_count=self.step_count)

    def moment_at(self, at_s: float) -> VisibleMoment | None:
        """What the job showed at at_s (its last transition by then); None before it existed.
        Transitions are appended in time order, so a binary search finds it."""
        index = bisect.bisect_right(self.transitions, at_s, key=lambda t: t.at_s)
        return self.transitions[index - 1] if index else None


@dataclass(frozen=True)
class PendingCreate:
    """A validated create that lands late: it becomes a job at land_s (clock seconds)."""

    order: int
    received_s: float
    land_s: float
    request_body: Any
    spec: Mapping[str, Any]
    api_version: str
    project_in_path: str
    location: str

    def to_json(self) -> dict[str, Any]:
        labels = self.spec.get("labels")
        return {"landsAt": wire.format_timestamp(self.land_s),
                "receivedAt": wire.format_timestamp(self.received_s),
                "location": self.location, "projectInPath": self.project_in_path,
                "apiVersion": self.api_version,
                "labels": dict(labels) if isinstance(labels, Mapping) else {},
                "request": self.request_body}


class RateWindow:
    """Sliding one-minute window of admitted calls."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def admit(self, now_s: float, limit: int) -> bool:
        while self._times and self._times[0] <= now_s - 60.0:
            self._times.popleft()
        if len(self._times) >= limit:
            return False
        self._times.append(now_s)
        return True
