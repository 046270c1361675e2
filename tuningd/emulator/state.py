"""In-memory Vertex tuning jobs: lifecycle, concurrency quota, late creates, rate limits,
counters; clock-driven.

Transitions are applied lazily: every call first runs `advance()`, which replays every event due
up to `clock.now()` in time order (late creates landing included). Events happen at their
scheduled instants, not when someone looks, so results do not depend on when (or whether) anyone
polls.
"""

from __future__ import annotations

import copy
import heapq
import random
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

import structlog

from tuningd.core.errors import Code, FailedPrecondition, InvalidArgument, NotFound
from tuningd.core.eta import size_of
from tuningd.core.model import JobState
from tuningd.emulator.auth import TokenAuthority
from tuningd.emulator.config import Clock, EmulatorConfig, QuotaMode, SystemClock
from tuningd.emulator.faults import FaultDice, Faults, rate_limit_error
from tuningd.emulator.google_errors import concurrency_error
from tuningd.emulator.jobs import (
    CANCELLED_MESSAGE,
    PROCESSING_DATASET_END,
    TERMINAL,
    TUNING_END,
    WAITING_FOR_CAPACITY_END,
    EmulatedJob,
    PendingCreate,
    Phase,
    RateWindow,
    VisibleMoment,
)
from tuningd.emulator.processing import process_datasets, with_pre_tuned_base
from tuningd.emulator.render import job_name, render_view
from tuningd.vertex import wire

log = structlog.get_logger("tuningd.emulator")

# Re-exported: callers (bench/, tests) import the job records from here.
__all__ = ["CANCELLED_MESSAGE", "TERMINAL", "EmulatedJob", "EmulatorState", "PendingCreate",
           "Phase", "RateWindow", "VisibleMoment"]


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
        # Late creates not landed yet: a heap of (land_s, order, create).
        self._pending: list[tuple[float, int, PendingCreate]] = []
        self._pending_order = 0
        self.late_creates_rejected = 0
        self._seq = 0
        self.max_active = 0
        self.request_counts: dict[str, Counter[str]] = {}
        self._request_window = RateWindow()
        self._create_window = RateWindow()
        self.tokens.reset()
        self._changed()

    def _changed(self) -> None:
        """A kept fact changed (a job, a late create, a counter): persist.PersistentState saves."""

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
        return job_name(self.config.project_number, job)

    @property
    def pending_creates(self) -> tuple[PendingCreate, ...]:
        """Late creates that have not landed yet, earliest first."""
        self.advance()
        return tuple(entry[2] for entry in sorted(self._pending))

    # ----------------------------------------------------------------- API operations

    def create(self, body: Any, *, api_version: str, project: str,
               location: str) -> EmulatedJob:
        """Validate and store a new job (PENDING); raises InvalidArgument / ResourceExhausted."""
        spec = self.validate_create(body, api_version=api_version)
        return self.commit_create(spec, body, api_version=api_version, project=project,
                                  location=location)

    def validate_create(self, body: Any, *, api_version: str) -> dict[str, Any]:
        """The canonical spec of a create body, or InvalidArgument; changes nothing."""
        self.advance()
        spec = wire.parse_tuning_job(body, ignore_unknown=not self.config.strict_unknown_fields,
                                     api_version=api_version)
        # Output-only fields (e.g. from a re-posted GET result) are ignored on create.
        spec = wire.strip_output_only(spec)
        wire.validate_create(spec, self.catalog, api_version=api_version)
        # Continuous tuning: Vertex fills the output-only preTunedModel.baseModel.
        return with_pre_tuned_base(spec, self.jobs.values())

    def commit_create(self, spec: Mapping[str, Any], body: Any, *, api_version: str,
                      project: str, location: str) -> EmulatedJob:
        """Store a validated job now; ResourceExhausted when quota_mode=reject finds no slot."""
        self.advance()
        if self._quota_refuses():
            raise concurrency_error(self.active_count, self.config.max_concurrent,
                                    self.config.project_number)
        job = self._commit(spec, copy.deepcopy(body), api_version=api_version, project=project,
                           location=location, at_s=self.now(), reason="created")
        self.advance()  # zero-length phases take effect at once
        return job

    def schedule_create(self, spec: Mapping[str, Any], body: Any, *, api_version: str,
                        project: str, location: str, received_s: float,
                        land_s: float) -> PendingCreate:
        """A validated create that becomes a job at land_s, exactly as if created then."""
        self._pending_order += 1
        pending = PendingCreate(order=self._pending_order, received_s=received_s,
                                land_s=max(land_s, received_s), request_body=copy.deepcopy(body),
                                spec=spec, api_version=api_version, project_in_path=project,
                                location=location)
        heapq.heappush(self._pending, (pending.land_s, pending.order, pending))
        self._changed()
        log.info("late_create.scheduled", location=location,
                 lands_at=wire.format_timestamp(pending.land_s),
                 labels=pending.to_json()["labels"])
        return pending

    def _quota_refuses(self) -> bool:
        return (self.config.quota_mode == QuotaMode.REJECT
                and self.active_count >= self.config.max_concurrent)

    def _commit(self, spec: Mapping[str, Any], body: Any, *, api_version: str, project: str,
                location: str, at_s: float, reason: str) -> EmulatedJob:
        self._seq += 1
        epochs_hint = 40  # checkpoint endpoints are pre-drawn so ids are seed-stable
        job = EmulatedJob(
            seq=self._seq, job_id=self._new_id(), location=location, api_version=api_version,
            project_in_path=project, request_body=body, spec=dict(spec), create_s=at_s,
            update_s=at_s, model_id=self._new_id(), endpoint_id=self._new_id(),
            checkpoint_endpoint_ids=tuple(self._new_id() for _ in range(epochs_hint)),
        )
        self.jobs[job.job_id] = job
        self._live[job.job_id] = job
        if self.config.quota_mode == QuotaMode.REJECT or (
                not self._waiting and self.active_count < self.config.max_concurrent):
            self._grant_slot(job, at_s, record=False)
        else:
            self._waiting.append(job)
        self._transition(job, at_s, reason)
        return job

    def _land(self, pending: PendingCreate) -> None:
        """A late create arrives: a create at that instant (quota_mode=reject may refuse it)."""
        labels = pending.to_json()["labels"]
        if self._quota_refuses():
            self.late_creates_rejected += 1
            self._changed()
            log.info("late_create.rejected", location=pending.location, labels=labels,
                     at=wire.format_timestamp(pending.land_s), reason="concurrent quota full")
            return
        job = self._commit(pending.spec, pending.request_body, api_version=pending.api_version,
                           project=pending.project_in_path, location=pending.location,
                           at_s=pending.land_s, reason="created (landed late)")
        log.info("late_create.landed", remote_id=job.job_id, location=job.location, labels=labels,
                 received_at=wire.format_timestamp(pending.received_s),
                 at=wire.format_timestamp(pending.land_s))

    def get(self, location: str, job_id: str) -> EmulatedJob:
        self.advance()
        job = self.jobs.get(job_id)
        if job is None or job.location != location:
            raise NotFound(f"The TuningJob does not exist: projects/{self.config.project_number}"
                           f"/locations/{location}/tuningJobs/{job_id}.")
        return job

    def list_jobs(self, location: str, *, filter_text: str, page_size: int,
                  page_token: str) -> tuple[list[EmulatedJob], str | None]:
        """One page, newest createTime first; the token resumes after the last job shown.
        With faults.list_lag_s the page is taken from the world as it was that long ago."""
        page, token = self.list_views(location, filter_text=filter_text, page_size=page_size,
                                      page_token=page_token)
        return [job for job, _ in page], token

    def list_as_of_s(self) -> float | None:
        """The instant lists show (None = now): now minus faults.list_lag_s."""
        lag_s = self.faults.list_lag_s
        return self.now() - lag_s if lag_s > 0 else None

    def list_views(self, location: str, *, filter_text: str, page_size: int,
                   page_token: str) -> tuple[list[tuple[EmulatedJob, dict[str, Any]]], str | None]:
        """list_jobs with each job's (possibly lagged) view, on which the filter was evaluated."""
        self.advance()
        as_of_s = self.list_as_of_s()
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
        matched: list[tuple[EmulatedJob, dict[str, Any]]] = []
        for job in candidates:
            if after is not None and job.seq >= after:
                continue
            shown = self.view(job) if as_of_s is None else self.view_at(job, as_of_s)
            if shown is not None and predicate(shown):
                matched.append((job, shown))
                if len(matched) > page_size:
                    break
        page = matched[:page_size]
        token = None
        if len(matched) > page_size:
            token = wire.encode_page_token(str(page[-1][0].seq), filter_text, scope)
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

    def check_cancel(self, location: str, job_id: str) -> EmulatedJob:
        """The errors cancel would raise (NotFound, FailedPrecondition), changing nothing."""
        job = self.get(location, job_id)
        if job.ended:
            raise FailedPrecondition(
                f"Cannot cancel tuning job {self.job_name(job)} because it is in state "
                f"{job.state.value}.")
        return job

    def cancel(self, location: str, job_id: str) -> EmulatedJob:
        """Start cancellation; a job that has already ended -> FailedPrecondition."""
        job = self.check_cancel(location, job_id)
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
        """Apply every event due up to now, earliest first, so quota hand-overs chain correctly.
        A late create lands in that same order; at an equal instant the lifecycle event goes
        first (a slot freed at t is free for a create landing at t)."""
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
            landing_s = self._pending[0][0] if self._pending else None
            if landing_s is not None and landing_s <= now and (due is None or landing_s < due[0]):
                self._land(heapq.heappop(self._pending)[2])
                continue
            if due is None:
                return
            self._apply(due[2], due[0], due[3])

    def next_event_s(self) -> float | None:
        """When the next transition or late-create landing is due (for the real-clock ticker)."""
        times = [e[0] for e in (self._next_event(j) for j in self._live.values()) if e]
        if self._pending:
            times.append(self._pending[0][0])
        return min(times) if times else None

    def phase_seconds(self, job: EmulatedJob) -> tuple[float, float]:
        """(pending, running) seconds of one job; a subclass may vary them per job (bench/).

        With `seconds_per_million_tokens` the run follows the job's billable tokens once its
        dataset is read (before that, job_seconds stands in)."""
        cfg = self.config
        size = size_of({"tuningDataStats": job.stats}) if job.stats else None
        if cfg.seconds_per_million_tokens <= 0 or size is None:
            return cfg.pending_seconds, cfg.job_seconds
        spread = cfg.run_spread * (2.0 * random.Random(job.job_id).random() - 1.0)
        return cfg.pending_seconds, size[1] / 1e6 * cfg.seconds_per_million_tokens * (1 + spread)

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
            # Datasets are read when processing starts; a failure surfaces when it ends.
            done = process_datasets(job.spec, job.job_id, catalog=self.catalog,
                                    gcs_root=self.config.gcs_root,
                                    max_example_tokens=self.config.max_example_tokens)
            job.hyper_parameters, job.stats = done.hyper_parameters, done.stats
            job.step_count, job.dataset_error = done.step_count, done.dataset_error
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
        self._changed()
        previous = job.transitions[-1] if job.transitions else None
        entry = job.moment(reason)  # the whole view from now on, for lagged lists
        job.transitions.append(entry)
        log.info("emulated_job.transitioned", remote_id=job.job_id, location=job.location,
                 from_state=previous.state.value if previous else None,
                 to_state=job.state.value,
                 tuning_job_state=entry.tuning_job_state.value if entry.tuning_job_state else None,
                 reason=reason, at=wire.format_timestamp(at_s))

    def _new_id(self) -> str:
        while True:
            candidate = str(self._id_rng.randrange(10**18, 10**19))
            if candidate not in self.jobs:
                return candidate

    # ----------------------------------------------------------------- rendering

    def view(self, job: EmulatedJob) -> dict[str, Any]:
        """The job in canonical wire form as of now (callers render it per version/enums)."""
        return render_view(job, job.moment(), project_number=self.config.project_number,
                           run_s=self.phase_seconds(job)[1], now_s=self.now())

    def view_at(self, job: EmulatedJob, at_s: float) -> dict[str, Any] | None:
        """The job as it looked at at_s (a past instant), or None if it did not exist yet."""
        moment = job.moment_at(at_s)
        if moment is None:
            return None
        return render_view(job, moment, project_number=self.config.project_number,
                           run_s=self.phase_seconds(job)[1], now_s=at_s)

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
            "pendingCreates": [entry[2].to_json() for entry in sorted(self._pending)],
            "lateCreatesRejected": self.late_creates_rejected,
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
