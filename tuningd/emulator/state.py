"""In-memory Vertex tuning jobs: lifecycle, concurrency quota, rate limits, counters; clock-driven.

Transitions are applied lazily: every call first runs `advance()`, which replays every event due
up to `clock.now()` in time order. Events happen at their scheduled instants, not when someone
looks, so results do not depend on when (or whether) anyone polls.
"""

from __future__ import annotations

import copy
import math
import random
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from tuningd import wire
from tuningd.emulator import dataset as ds
from tuningd.emulator.auth import TokenAuthority
from tuningd.emulator.config import Clock, EmulatorConfig, QuotaMode, SystemClock
from tuningd.emulator.faults import FaultDice, Faults, rate_limit_error
from tuningd.errors import Code, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from tuningd.model import JobState, TuningJobState

log = structlog.get_logger("tuningd.emulator")

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


@dataclass(frozen=True)
class Transition:
    """One visible change of a job, kept for the inspection endpoint."""

    at_s: float
    state: JobState
    tuning_job_state: TuningJobState | None
    reason: str

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
    transitions: list[Transition] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

    @property
    def tuning_job_state(self) -> TuningJobState | None:
        if self.state == JobState.JOB_STATE_PENDING and self.phase == Phase.WAITING_FOR_QUOTA:
            return TuningJobState.TUNING_JOB_STATE_WAITING_FOR_QUOTA
        if self.state == JobState.JOB_STATE_RUNNING:
            return _RUNNING_SUBSTATE.get(self.phase)
        return None


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


class EmulatorState:
    """All jobs and counters of one emulator; every public method is synchronous, clock-driven."""

    def __init__(self, config: EmulatorConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.clock: Clock = clock or SystemClock()
        self.catalog = self.config.catalog or wire.DEFAULT_CATALOG
        self.tokens = TokenAuthority(self.config.token_seconds)
        self.reset()

    # ----------------------------------------------------------------- bookkeeping

    def reset(self) -> None:
        """Forget every job, counter, token and runtime fault; restore the configured faults."""
        seed = self.config.seed
        self.faults: Faults = self.config.faults
        self.dice = FaultDice(seed)
        # Separate streams: ids and cancel outcomes must not shift when faults are toggled.
        self._id_rng = random.Random(None if seed is None else f"ids-{seed}")
        self._cancel_rng = FaultDice(None if seed is None else seed + 1)
        self.jobs: dict[str, EmulatedJob] = {}
        self._live: dict[str, EmulatedJob] = {}
        self._waiting: deque[EmulatedJob] = deque()
        self._slot_holders: set[str] = set()
        self._seq = 0
        self.max_active = 0
        self.request_counts: dict[str, Counter[str]] = {}
        self._request_window = RateWindow()
        self._create_window = RateWindow()
        self.tokens.reset()

    def now(self) -> float:
        return self.clock.now()

    def record_request(self, method: str, outcome: str) -> None:
        self.request_counts.setdefault(method, Counter())[outcome] += 1

    def check_rate(self, method: str) -> None:
        """Per-minute request and create limits (off when 0); raises 429 RESOURCE_EXHAUSTED."""
        now = self.now()
        cfg = self.config
        if cfg.requests_per_minute and not self._request_window.admit(
                now, cfg.requests_per_minute):
            raise rate_limit_error(
                "Resource management (CRUD) requests",
                "aiplatform.googleapis.com/resource_management_requests",
                cfg.project_number, cfg.requests_per_minute)
        if method == "create" and cfg.creates_per_minute and not self._create_window.admit(
                now, cfg.creates_per_minute):
            raise rate_limit_error(
                "Job or LRO submission requests",
                "aiplatform.googleapis.com/job_submission_requests",
                cfg.project_number, cfg.creates_per_minute)

    @property
    def active_count(self) -> int:
        return len(self._slot_holders)

    def job_name(self, job: EmulatedJob) -> str:
        number = self.config.project_number
        return f"projects/{number}/locations/{job.location}/tuningJobs/{job.job_id}"

    # ----------------------------------------------------------------- API operations

    def create(self, body: Any, *, api_version: str, project: str,
               location: str) -> EmulatedJob:
        """Validate and store a new job (PENDING); raises InvalidArgument / ResourceExhausted."""
        self.advance()
        spec = wire.parse_tuning_job(body, ignore_unknown=not self.config.strict_unknown_fields,
                                     api_version=api_version)
        # Output-only fields (e.g. from a re-posted GET result) are ignored on create.
        spec = wire.strip_output_only(spec)
        wire.validate_create(spec, self.catalog)
        if (self.config.quota_mode == QuotaMode.REJECT
                and self.active_count >= self.config.max_concurrent):
            raise self._concurrency_error()
        now = self.now()
        self._seq += 1
        epochs_hint = 40  # checkpoint endpoints are pre-drawn so ids are seed-stable
        job = EmulatedJob(
            seq=self._seq, job_id=self._new_id(), location=location, api_version=api_version,
            project_in_path=project, request_body=copy.deepcopy(body), spec=spec, create_s=now,
            update_s=now, model_id=self._new_id(), endpoint_id=self._new_id(),
            checkpoint_endpoint_ids=tuple(self._new_id() for _ in range(epochs_hint)),
        )
        self.jobs[job.job_id] = job
        self._live[job.job_id] = job
        if self.config.quota_mode == QuotaMode.REJECT or (
                not self._waiting and self.active_count < self.config.max_concurrent):
            self._grant_slot(job, now, record=False)
        else:
            self._waiting.append(job)
        self._transition(job, now, "created")
        self.advance()  # zero-length phases take effect at once
        return job

    def get(self, location: str, job_id: str) -> EmulatedJob:
        self.advance()
        job = self.jobs.get(job_id)
        if job is None or job.location != location:
            raise NotFound(f"The TuningJob does not exist: projects/{self.config.project_number}"
                           f"/locations/{location}/tuningJobs/{job_id}.")
        return job

    def list_jobs(self, location: str, *, filter_text: str, page_size: int,
                  page_token: str) -> tuple[list[EmulatedJob], str | None]:
        """One page, newest createTime first; the token resumes after the last job shown."""
        self.advance()
        predicate = wire.compile_filter(filter_text)
        # A token only resumes the list it came from: same location, same filter.
        scope = f"locations/{location}"
        after: int | None = None
        if page_token:
            key = wire.decode_page_token(page_token, filter_text, scope)
            try:
                after = int(key)
            except ValueError:
                raise InvalidArgument("Invalid page token.") from None
        candidates = sorted((j for j in self.jobs.values() if j.location == location),
                            key=lambda j: j.seq, reverse=True)
        matched: list[EmulatedJob] = []
        for job in candidates:
            if after is not None and job.seq >= after:
                continue
            if predicate(self.view(job)):
                matched.append(job)
                if len(matched) > page_size:
                    break
        page = matched[:page_size]
        token = None
        if len(matched) > page_size:
            token = wire.encode_page_token(str(page[-1].seq), filter_text, scope)
        return page, token

    def experiment_context(self, location: str, store: str, context: str) -> dict[str, Any]:
        """The metadata Context behind a job's `experiment` (what aiplatform.Experiment reads)."""
        self.advance()
        name = (f"projects/{self.config.project_number}/locations/{location}/metadataStores/"
                f"{store}/contexts/{context}")
        for job in self.jobs.values():
            if job.start_s is not None and self.view(job).get("experiment") == name:
                stamp = wire.format_timestamp(job.start_s)
                return {"name": name, "displayName": context, "schemaTitle": "system.Experiment",
                        "schemaVersion": "0.0.1", "metadata": {"experiment_deleted": False},
                        "createTime": stamp, "updateTime": stamp}
        raise NotFound(f"Context {name} not found.")

    def cancel(self, location: str, job_id: str) -> EmulatedJob:
        """Start cancellation; a job that has already ended -> FailedPrecondition."""
        job = self.get(location, job_id)
        if job.ended:
            raise FailedPrecondition(
                f"Cannot cancel tuning job {self.job_name(job)} because it is in state "
                f"{job.state.value}.")
        if job.cancel_s is not None:
            return job  # already cancelling; Vertex treats a repeat as a no-op
        now = self.now()
        job.cancel_s = now
        job.cancel_completes = self._cancel_rng.roll(self.config.cancel_completes_probability)
        if not job.cancel_completes and job.phase == Phase.WAITING_FOR_QUOTA:
            self._waiting.remove(job)
        job.state = JobState.JOB_STATE_CANCELLING
        self._transition(job, now, "cancel requested")
        self.advance()
        return job

    # ----------------------------------------------------------------- lifecycle engine

    def advance(self) -> None:
        """Apply every event due up to now, earliest first, so quota hand-overs chain correctly."""
        now = self.now()
        while True:
            due: tuple[float, int, EmulatedJob, str] | None = None
            for job in self._live.values():
                event = self._next_event(job)
                if event is None or event[0] > now:
                    continue
                candidate = (event[0], job.seq, job, event[1])
                if due is None or candidate[:2] < due[:2]:
                    due = candidate
            if due is None:
                return
            self._apply(due[2], due[0], due[3])

    def next_event_s(self) -> float | None:
        """When the next transition is due (for the real-clock ticker)."""
        times = [e[0] for e in (self._next_event(j) for j in self._live.values()) if e]
        return min(times) if times else None

    def phase_seconds(self, job: EmulatedJob) -> tuple[float, float]:
        """(pending, running) seconds of one job; a subclass may vary them per job (bench/)."""
        return self.config.pending_seconds, self.config.job_seconds

    def _next_event(self, job: EmulatedJob) -> tuple[float, str] | None:
        cfg = self.config
        pending_s, run_s = self.phase_seconds(job)
        events: list[tuple[float, str]] = []
        if job.cancel_s is not None and not job.cancel_completes:
            events.append((job.cancel_s + cfg.cancel_seconds, "cancelled"))
        if job.phase == Phase.PENDING and job.slot_s is not None:
            events.append((job.slot_s + pending_s, "started"))
        elif job.start_s is not None:
            offsets = {
                Phase.PROCESSING_DATASET: (PROCESSING_DATASET_END, "dataset processed"),
                Phase.WAITING_FOR_CAPACITY: (WAITING_FOR_CAPACITY_END, "capacity acquired"),
                Phase.TUNING: (TUNING_END, "tuning finished"),
                Phase.POST_PROCESSING: (1.0, "succeeded"),
            }
            if job.phase in offsets:
                fraction, name = offsets[job.phase]
                events.append((job.start_s + fraction * run_s, name))
        return min(events) if events else None

    def _apply(self, job: EmulatedJob, at_s: float, event: str) -> None:
        cancelling = job.cancel_s is not None
        if event == "cancelled":
            job.error = {"code": int(Code.CANCELLED), "message": CANCELLED_MESSAGE}
            self._end(job, at_s, JobState.JOB_STATE_CANCELLED, event)
        elif event == "started":
            job.phase = Phase.PROCESSING_DATASET
            job.start_s = at_s
            self._load_dataset(job)
            if not cancelling:
                job.state = JobState.JOB_STATE_RUNNING
            self._transition(job, at_s, event)
        elif event == "dataset processed":
            if job.dataset_error is not None:
                job.error = {"code": int(Code.INVALID_ARGUMENT), "message": job.dataset_error}
                self._end(job, at_s, JobState.JOB_STATE_FAILED, "invalid dataset")
            else:
                job.phase = Phase.WAITING_FOR_CAPACITY
                self._transition(job, at_s, event)
        elif event == "capacity acquired":
            job.phase = Phase.TUNING
            self._transition(job, at_s, event)
        elif event == "tuning finished":
            job.phase = Phase.POST_PROCESSING
            self._transition(job, at_s, event)
        elif event == "succeeded":
            reason = "completed despite cancel" if cancelling else event
            self._end(job, at_s, JobState.JOB_STATE_SUCCEEDED, reason)

    def _end(self, job: EmulatedJob, at_s: float, state: JobState, reason: str) -> None:
        job.state = state
        job.phase = Phase.ENDED
        job.end_s = at_s
        self._live.pop(job.job_id, None)
        if job in self._waiting:
            self._waiting.remove(job)
        self._transition(job, at_s, reason)
        if job.job_id in self._slot_holders:
            self._slot_holders.discard(job.job_id)
            while self._waiting and self.active_count < self.config.max_concurrent:
                self._grant_slot(self._waiting.popleft(), at_s)

    def _grant_slot(self, job: EmulatedJob, at_s: float, *, record: bool = True) -> None:
        job.slot_s = at_s
        job.phase = Phase.PENDING
        self._slot_holders.add(job.job_id)
        self.max_active = max(self.max_active, self.active_count)
        if record:
            self._transition(job, at_s, "quota slot granted")

    def _transition(self, job: EmulatedJob, at_s: float, reason: str) -> None:
        job.update_s = at_s
        previous = job.transitions[-1] if job.transitions else None
        entry = Transition(at_s, job.state, job.tuning_job_state, reason)
        job.transitions.append(entry)
        log.info("job_transition", job_id=job.job_id, location=job.location,
                 from_state=previous.state.value if previous else None,
                 to_state=job.state.value,
                 tuning_job_state=entry.tuning_job_state.value if entry.tuning_job_state else None,
                 reason=reason, at=wire.format_timestamp(at_s))

    def _concurrency_error(self) -> ResourceExhausted:
        limit = self.config.max_concurrent
        number = self.config.project_number
        return ResourceExhausted(
            f"Quota exceeded for aiplatform.googleapis.com/global_concurrent_tuning_jobs: the "
            f"project already has {self.active_count} active tuning job(s) and the limit of "
            f"'Global concurrent tuning jobs' is {limit}. Retry after a running job ends.",
            details=[{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
                "metadata": {"service": "aiplatform.googleapis.com",
                             "quota_metric":
                                 "aiplatform.googleapis.com/global_concurrent_tuning_jobs",
                             "quota_limit_value": str(limit),
                             "consumer": f"projects/{number}"},
            }, {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"subject": f"projects/{number}",
                                "description": "Global concurrent tuning jobs"}],
            }],
        )

    def _new_id(self) -> str:
        while True:
            candidate = str(self._id_rng.randrange(10**18, 10**19))
            if candidate not in self.jobs:
                return candidate

    # ----------------------------------------------------------------- datasets

    def _model_info(self, job: EmulatedJob) -> wire.ModelInfo | None:
        return self.catalog.get(wire.base_model_id(str(job.spec.get("baseModel", ""))))

    def _dataset_format(self, job: EmulatedJob) -> str:
        info = self._model_info(job)
        return info.dataset_format if info is not None else ds.CONTENTS_FORMAT

    def _load_dataset(self, job: EmulatedJob) -> None:
        """Read and check the datasets when processing starts; the failure surfaces when the
        PROCESSING_DATASET phase ends. Also resolves the hyperparameters."""
        spec = job.spec.get("supervisedTuningSpec") or {}
        train_uri = str(spec.get("trainingDatasetUri", ""))
        val_uri = spec.get("validationDatasetUri")
        fmt = self._dataset_format(job)
        summary: ds.DatasetSummary | None = None
        root = self.config.gcs_root
        try:
            if root is not None and train_uri.startswith("gs://"):
                summary = ds.check_lines(ds.read_lines(root, train_uri), dataset_format=fmt,
                                         uri=train_uri)
                ds.check_training(summary, dataset_format=fmt, uri=train_uri)
                if isinstance(val_uri, str) and val_uri.startswith("gs://"):
                    val = ds.check_lines(ds.read_lines(root, val_uri), dataset_format=fmt,
                                         uri=val_uri)
                    ds.check_validation(val, dataset_format=fmt, uri=val_uri,
                                        training_count=len(summary.examples))
        except ds.DatasetError as exc:
            job.dataset_error = str(exc)
            summary = None
        if summary is None:
            summary = ds.synthetic_summary(job.job_id)
        job.hyper_parameters = self._resolve_hyper_parameters(job, len(summary.examples))
        if job.dataset_error is None:
            epochs = int(job.hyper_parameters["epochCount"])
            job.stats = ds.tuning_data_stats(summary, epochs=epochs,
                                             max_example_tokens=self.config.max_example_tokens)
            sds = job.stats.get("supervisedTuningDataStats", {})
            job.step_count = int(sds.get("tuningStepCount", 0))
            if sds.get("tuningDatasetExampleCount", 0) == 0:
                job.dataset_error = (f"Invalid dataset {train_uri}: no example is within the "
                                     f"token limit of {self.config.max_example_tokens}.")
                job.stats = None

    def _resolve_hyper_parameters(self, job: EmulatedJob, example_count: int) -> dict[str, Any]:
        spec = job.spec.get("supervisedTuningSpec") or {}
        given = dict(spec.get("hyperParameters") or {})
        given.setdefault("epochCount", ds.auto_epochs(example_count))
        if "learningRate" not in given:
            given.setdefault("learningRateMultiplier", 1.0)
        if "adapterSize" not in given:
            info = self._model_info(job)
            sizes = info.adapter_sizes if info is not None else frozenset()
            if "ADAPTER_SIZE_FOUR" in sizes or not sizes:
                given["adapterSize"] = "ADAPTER_SIZE_FOUR"
            else:
                given["adapterSize"] = min(sizes, key=lambda s: wire.ADAPTER_SIZE_NUMBERS.get(s, 0))
        return given

    # ----------------------------------------------------------------- rendering

    def view(self, job: EmulatedJob) -> dict[str, Any]:
        """The job in canonical wire form as of now (callers render it per version/enums)."""
        number = self.config.project_number
        out = copy.deepcopy(job.spec)
        out["name"] = self.job_name(job)
        out["state"] = job.state.value
        out["createTime"] = wire.format_timestamp(job.create_s)
        out["updateTime"] = wire.format_timestamp(job.update_s)
        if job.start_s is not None:
            out["startTime"] = wire.format_timestamp(job.start_s)
            stamp = wire.format_timestamp(job.create_s)
            digits = "".join(ch for ch in stamp if ch.isdigit())
            out["experiment"] = (f"projects/{number}/locations/{job.location}/metadataStores/"
                                 f"default/contexts/tuning-experiment-{digits}")
        if job.end_s is not None:
            out["endTime"] = wire.format_timestamp(job.end_s)
        if job.hyper_parameters is not None and "supervisedTuningSpec" in out:
            out["supervisedTuningSpec"]["hyperParameters"] = dict(job.hyper_parameters)
        sub_state = job.tuning_job_state
        if sub_state is not None:
            out["tuningJobState"] = sub_state.value
        if job.error is not None:
            out["error"] = dict(job.error)
        if job.stats is not None and job.phase in (Phase.TUNING, Phase.POST_PROCESSING,
                                                   Phase.ENDED):
            out["tuningDataStats"] = copy.deepcopy(job.stats)
        metadata = self._metadata(job)
        if metadata:
            out["tuningJobMetadata"] = metadata
        if job.state == JobState.JOB_STATE_SUCCEEDED:
            out["tunedModel"] = self._tuned_model(job)
        return out

    def _epochs(self, job: EmulatedJob) -> int:
        return int((job.hyper_parameters or {}).get("epochCount", 1))

    def _metadata(self, job: EmulatedJob) -> dict[str, int]:
        if job.start_s is None or job.stats is None:
            return {}
        epochs = self._epochs(job)
        if job.phase == Phase.TUNING:
            tuning_start = job.start_s + WAITING_FOR_CAPACITY_END * self.config.job_seconds
            span = (TUNING_END - WAITING_FOR_CAPACITY_END) * self.config.job_seconds
            done_fraction = min(1.0, (self.now() - tuning_start) / span) if span > 0 else 1.0
        elif job.phase == Phase.POST_PROCESSING or job.state == JobState.JOB_STATE_SUCCEEDED:
            done_fraction = 1.0
        else:
            return {}
        result = {"completedEpochCount": math.floor(epochs * done_fraction),
                  "completedStepCount": math.floor(job.step_count * done_fraction)}
        return {k: v for k, v in result.items() if v}

    def _tuned_model(self, job: EmulatedJob) -> dict[str, Any]:
        prefix = f"projects/{self.config.project_number}/locations/{job.location}"
        endpoint = f"{prefix}/endpoints/{job.endpoint_id}"
        model: dict[str, Any] = {"model": f"{prefix}/models/{job.model_id}@1",
                                 "endpoint": endpoint}
        spec = job.spec.get("supervisedTuningSpec") or {}
        if not spec.get("exportLastCheckpointOnly", False):
            epochs = self._epochs(job)
            steps_per_epoch = max(1, job.step_count // max(epochs, 1))
            checkpoints = []
            for epoch in range(1, epochs + 1):
                ids = job.checkpoint_endpoint_ids
                ckpt_id = ids[(epoch - 1) % len(ids)]
                ckpt_endpoint = endpoint if epoch == epochs else f"{prefix}/endpoints/{ckpt_id}"
                checkpoints.append({"checkpointId": str(epoch), "epoch": epoch,
                                    "step": epoch * steps_per_epoch, "endpoint": ckpt_endpoint})
            model["checkpoints"] = checkpoints
        return model

    # ----------------------------------------------------------------- inspection

    def snapshot(self) -> dict[str, Any]:
        """Everything a test or benchmark may want to assert on, as JSON."""
        self.advance()
        jobs = []
        for job in sorted(self.jobs.values(), key=lambda j: j.seq):
            jobs.append({
                "name": self.job_name(job),
                "jobId": job.job_id,
                "location": job.location,
                "apiVersion": job.api_version,
                "projectInPath": job.project_in_path,
                "state": job.state.value,
                "tuningJobState": job.tuning_job_state.value if job.tuning_job_state else None,
                "cancelRequested": job.cancel_s is not None,
                "cancelCompletes": job.cancel_completes,
                "request": job.request_body,
                "job": self.view(job),
                "transitions": [t.to_json() for t in job.transitions],
            })
        return {
            "now": wire.format_timestamp(self.now()),
            "jobs": jobs,
            "requestCounts": {m: {k: v for k, v in sorted(c.items())}
                              for m, c in sorted(self.request_counts.items())},
            "active": self.active_count,
            "waiting": len(self._waiting),
            "maxActive": self.max_active,
            "tokensIssued": self.tokens.issued_count,
            "faults": self.faults.to_json(),
            "config": {
                "projectNumber": self.config.project_number,
                "pendingSeconds": self.config.pending_seconds,
                "jobSeconds": self.config.job_seconds,
                "cancelSeconds": self.config.cancel_seconds,
                "maxConcurrent": self.config.max_concurrent,
                "quotaMode": self.config.quota_mode.value,
                "strictUnknownFields": self.config.strict_unknown_fields,
                "strictAuth": self.config.strict_auth,
                "gcsRoot": str(self.config.gcs_root) if self.config.gcs_root else None,
            },
        }
