"""The emulator's jobs kept in a state directory across restarts: one JSON file, replaced
atomically after every change, reloaded and replayed by the clock at start.

Why one JSON file and not SQLite: the emulator's state is a few small records per job that
change a few times in a job's life, and it is read back whole at start; writing the whole file
to a temporary name and renaming it over the old one is atomic (a kill -9 mid-write leaves the
previous file), needs no schema, and keeps the emulator free of a database dependency.

Kept: jobs (with their visible history, for lagged lists), late creates not landed yet, the
sequence and counters that order and name them. Not kept: request counts, rate windows, issued
tokens and runtime faults (an emulator restart resets them, as a service restart would).
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import json
import os
from collections import deque
from pathlib import Path
from typing import IO, Any

import structlog

from tuningd.core.errors import FailedPrecondition
from tuningd.core.model import JobState, TuningJobState
from tuningd.emulator.config import Clock, EmulatorConfig, ManualClock
from tuningd.emulator.jobs import EmulatedJob, PendingCreate, Phase, VisibleMoment
from tuningd.emulator.state import EmulatorState

log = structlog.get_logger("tuningd.emulator")

STATE_FILE_NAME = "emulator.json"
FORMAT_VERSION = 1
# Fields of a VisibleMoment that hold the job's own (shared) values: written once, on the job.
_SHARED = (("error", "error"), ("hyper_parameters", "hyperParameters"), ("stats", "stats"))


class EmulatorStateError(FailedPrecondition):
    """The state directory cannot be used: held by another emulator, or its file is unreadable."""


class PersistentState(EmulatorState):
    """EmulatorState whose jobs outlive the process: `open()` locks the directory and reloads
    the file, every change is saved before the call that made it returns, `close()` unlocks."""

    def __init__(self, state_dir: Path, config: EmulatorConfig | None = None,
                 clock: Clock | None = None) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE_NAME
        self._dirty = False
        self._open = False  # nothing is saved before the old file has been read
        self._lock: IO[bytes] | None = None
        super().__init__(config, clock)

    # ----------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Lock the directory, reload the saved jobs, replay what happened while stopped."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = _lock(self.state_dir / (STATE_FILE_NAME + ".lock"))
        try:
            data = self._read()
            if data is not None:
                self._restore(data)
        except BaseException:
            self.close()
            raise
        self._open = True
        self._dirty = True
        live = sum(1 for j in self.jobs.values() if not j.ended)
        self.advance()  # jobs due to end while the emulator was down end now, at their instants
        log.info("emulator.state_loaded", path=str(self.path), jobs=len(self.jobs),
                 live_at_load=live, live=sum(1 for j in self.jobs.values() if not j.ended),
                 pending_creates=len(self._pending))

    def close(self) -> None:
        """Save what is unsaved and release the directory."""
        if self._open:
            self._save_if_changed()
        self._open = False
        if self._lock is not None:
            self._lock.close()  # closing the descriptor drops the flock
            self._lock = None

    # ----------------------------------------------------------------- save points

    def _changed(self) -> None:
        self._dirty = True

    def advance(self) -> None:
        super().advance()
        self._save_if_changed()

    def schedule_create(self, *args: Any, **kwargs: Any) -> PendingCreate:
        pending = super().schedule_create(*args, **kwargs)
        self._save_if_changed()
        return pending

    def reset(self) -> None:
        super().reset()
        self._save_if_changed()

    def _save_if_changed(self) -> None:
        if self._open and self._dirty:
            write_atomically(self.path, json.dumps(self.to_saved(), separators=(",", ":")))
            self._dirty = False

    # ----------------------------------------------------------------- format

    def to_saved(self) -> dict[str, Any]:
        """Everything kept across a restart, as JSON."""
        return {
            "version": FORMAT_VERSION,
            "savedAt": self.now(),
            "seq": self._seq,
            "maxActive": self.max_active,
            "pendingOrder": self._pending_order,
            "lateCreatesRejected": self.late_creates_rejected,
            # A seeded emulator goes on naming jobs and deciding cancels as if never stopped.
            "idRng": self._id_rng.getstate(),
            "cancelRng": self._cancel_rng._rng.getstate(),
            "waiting": [job.job_id for job in self._waiting],
            "slotHolders": sorted(self._slot_holders),
            "jobs": [_job_to_json(job) for job in sorted(self.jobs.values(), key=lambda j: j.seq)],
            "pending": [_pending_to_json(entry[2]) for entry in sorted(self._pending)],
        }

    def _read(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise EmulatorStateError(f"emulator state {self.path}: cannot read: "
                                     f"{exc.strerror}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise EmulatorStateError(f"emulator state {self.path}: not valid JSON ({exc}); "
                                     "move it away to start with no jobs") from None
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise EmulatorStateError(f"emulator state {self.path}: not a version "
                                     f"{FORMAT_VERSION} emulator state file")
        return data

    def _restore(self, data: dict[str, Any]) -> None:
        try:
            jobs = [_job_from_json(raw) for raw in data["jobs"]]
            self.jobs = {job.job_id: job for job in jobs}
            self._live = {job.job_id: job for job in jobs if job.phase != Phase.ENDED}
            self._waiting = deque(self.jobs[i] for i in data["waiting"])
            self._slot_holders = set(data["slotHolders"]) & set(self.jobs)
            self._pending = [(p.land_s, p.order, p) for p in map(_pending_from_json,
                                                                 data["pending"])]
            heapq.heapify(self._pending)
            self._seq = int(data["seq"])
            self._pending_order = int(data["pendingOrder"])
            self.max_active = int(data["maxActive"])
            self.late_creates_rejected = int(data["lateCreatesRejected"])
            saved_at_s = float(data["savedAt"])
            self._id_rng.setstate(_rng_state(data["idRng"]))
            self._cancel_rng._rng.setstate(_rng_state(data["cancelRng"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise EmulatorStateError(f"emulator state {self.path}: malformed ({exc!r}); move it "
                                     "away to start with no jobs") from None
        # A manual clock starts at a fixed instant: never let time run backwards over the jobs.
        if isinstance(self.clock, ManualClock) and self.clock.now() < saved_at_s:
            self.clock.advance(saved_at_s - self.clock.now())


def _rng_state(raw: list[Any]) -> tuple[Any, ...]:
    """random.Random.getstate() back from JSON (its lists were tuples)."""
    version, internal, gauss_next = raw
    return (version, tuple(internal), gauss_next)


def write_atomically(path: Path, text: str) -> None:
    """Replace path with text, all or nothing: a crash at any point leaves the old or new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            # Without it a power cut after the rename can leave an empty file under the new name.
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _lock(path: Path) -> IO[bytes]:
    fh = path.open("ab")  # held open (and locked) for the emulator's lifetime
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise EmulatorStateError(f"emulator state {path.parent}: another running emulator keeps "
                                 "its jobs there; stop it or choose another state directory"
                                 ) from None
    return fh


def _job_to_json(job: EmulatedJob) -> dict[str, Any]:
    return {
        "seq": job.seq, "jobId": job.job_id, "location": job.location,
        "apiVersion": job.api_version, "projectInPath": job.project_in_path,
        "request": job.request_body, "spec": job.spec, "createS": job.create_s,
        "modelId": job.model_id, "endpointId": job.endpoint_id,
        "checkpointEndpointIds": list(job.checkpoint_endpoint_ids), "updateS": job.update_s,
        "state": job.state.value, "phase": job.phase.value, "slotS": job.slot_s,
        "startS": job.start_s, "endS": job.end_s, "cancelS": job.cancel_s,
        "cancelCompletes": job.cancel_completes, "hyperParameters": job.hyper_parameters,
        "datasetError": job.dataset_error, "stats": job.stats, "stepCount": job.step_count,
        "error": job.error,
        "transitions": [_moment_to_json(job, moment) for moment in job.transitions],
    }


def _moment_to_json(job: EmulatedJob, moment: VisibleMoment) -> dict[str, Any]:
    out: dict[str, Any] = {
        "atS": moment.at_s, "state": moment.state.value,
        "tuningJobState": moment.tuning_job_state.value if moment.tuning_job_state else None,
        "reason": moment.reason, "phase": moment.phase.value, "startS": moment.start_s,
        "endS": moment.end_s, "stepCount": moment.step_count,
    }
    for attr, key in _SHARED:
        value = getattr(moment, attr)
        # `true`: the job's own value (a moment shares it, it never changes once set).
        out[key] = True if value is not None and value is getattr(job, attr) else value
    return out


def _job_from_json(raw: dict[str, Any]) -> EmulatedJob:
    job = EmulatedJob(
        seq=int(raw["seq"]), job_id=str(raw["jobId"]), location=str(raw["location"]),
        api_version=str(raw["apiVersion"]), project_in_path=str(raw["projectInPath"]),
        request_body=raw["request"], spec=dict(raw["spec"]), create_s=float(raw["createS"]),
        model_id=str(raw["modelId"]), endpoint_id=str(raw["endpointId"]),
        checkpoint_endpoint_ids=tuple(raw["checkpointEndpointIds"]),
        update_s=float(raw["updateS"]), state=JobState(raw["state"]), phase=Phase(raw["phase"]),
        slot_s=raw["slotS"], start_s=raw["startS"], end_s=raw["endS"], cancel_s=raw["cancelS"],
        cancel_completes=bool(raw["cancelCompletes"]), hyper_parameters=raw["hyperParameters"],
        dataset_error=raw["datasetError"], stats=raw["stats"], step_count=int(raw["stepCount"]),
        error=raw["error"],
    )
    for moment in raw["transitions"]:
        shared = {attr: getattr(job, attr) if moment[key] is True else moment[key]
                  for attr, key in _SHARED}
        job.transitions.append(VisibleMoment(
            at_s=float(moment["atS"]), state=JobState(moment["state"]),
            tuning_job_state=(TuningJobState(moment["tuningJobState"])
                              if moment["tuningJobState"] else None),
            reason=str(moment["reason"]), phase=Phase(moment["phase"]),
            start_s=moment["startS"], end_s=moment["endS"], step_count=int(moment["stepCount"]),
            **shared))
    return job


def _pending_to_json(pending: PendingCreate) -> dict[str, Any]:
    return {"order": pending.order, "receivedS": pending.received_s, "landS": pending.land_s,
            "request": pending.request_body, "spec": dict(pending.spec),
            "apiVersion": pending.api_version, "projectInPath": pending.project_in_path,
            "location": pending.location}


def _pending_from_json(raw: dict[str, Any]) -> PendingCreate:
    return PendingCreate(order=int(raw["order"]), received_s=float(raw["receivedS"]),
                         land_s=float(raw["landS"]), request_body=raw["request"],
                         spec=raw["spec"], api_version=str(raw["apiVersion"]),
                         project_in_path=str(raw["projectInPath"]),
                         location=str(raw["location"]))
