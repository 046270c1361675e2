"""An in-memory JobStore: the SQLite store's contract without a disk, for tests and simulations."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tuningd.core import errors
from tuningd.core.model import TERMINAL_STATES, Job, JobEvent, LocalState
from tuningd.ports import JobStore, StaleWrite, page_key, parse_page_key

__all__ = ["MemoryStore"]

# Fields SQLite stores as REAL: an int given for one reads back as a float there, so here too.
_FLOAT_FIELDS = tuple(f.name for f in dataclasses.fields(Job)
                      if str(f.type).startswith("float"))


def _normalized(job: Job) -> Job:
    floats = {name: float(value) for name in _FLOAT_FIELDS
              if isinstance(value := getattr(job, name), int)}
    return job.evolve(**floats) if floats else job


def _detail(detail: Mapping[str, Any] | None) -> str:
    """An event's detail as JSON text, as SQLite keeps it; fails before anything is written."""
    return json.dumps(dict(detail or {}), sort_keys=True, separators=(",", ":"))


@dataclasses.dataclass(frozen=True)
class _StoredEvent:
    """A history row; its detail is kept as text so no reader can change what is stored."""

    at: float
    from_state: LocalState | None
    to_state: LocalState
    reason: str
    detail_json: str

    def read(self, job_id: str, seq: int) -> JobEvent:
        return JobEvent(job_id=job_id, seq=seq, at=self.at, from_state=self.from_state,
                        to_state=self.to_state, reason=self.reason,
                        detail=json.loads(self.detail_json))


def _labels(spec_json: str) -> dict[str, str]:
    """The string-valued client labels of a spec (fixed at creation, as job_labels is)."""
    try:
        labels = json.loads(spec_json).get("labels")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(labels, dict):
        return {}
    return {str(k): v for k, v in labels.items() if isinstance(v, str)}


def _sort_key(job: Job) -> tuple[float, str]:
    return (job.created_at, job.id)


class MemoryStore:
    """Jobs and events in dicts; every write is atomic because it never awaits midway.

    Nothing survives the process: use it where the store's durability is not what is tested.
    """

    def __init__(self) -> None:
        self.path = ":memory:"
        self._jobs: dict[str, Job] = {}
        self._events: dict[str, list[_StoredEvent]] = {}
        self._labels: dict[str, dict[str, str]] = {}
        self._by_request: dict[tuple[str, str, str], str] = {}
        self._closed = False

    @classmethod
    async def open(cls) -> MemoryStore:
        """A new, empty store (the same shape of call as Store.open)."""
        return cls()

    # ----- reads -----

    async def get(self, job_id: str) -> Job | None:
        """The job with this local id, or None."""
        return self._jobs.get(job_id)

    async def get_by_request_id(self, project: str, location: str,
                                request_id: str) -> Job | None:
        """The job created with this requestId in this project and location, or None."""
        job_id = self._by_request.get((project, location, request_id))
        return None if job_id is None else self._jobs[job_id]

    async def history(self, job_id: str) -> list[JobEvent]:
        """The job's events, oldest first."""
        return [e.read(job_id, seq) for seq, e in enumerate(self._events.get(job_id, ()), 1)]

    async def active_and_queued(self) -> list[Job]:
        """Every non-terminal job, oldest first."""
        return sorted((j for j in self._jobs.values() if j.state not in TERMINAL_STATES),
                      key=_sort_key)

    async def places(self) -> list[tuple[str, str]]:
        """Every (project, location) any job was ever accepted for, sorted."""
        return sorted({(j.project, j.location) for j in self._jobs.values()})

    async def count_by_state(self) -> dict[LocalState, int]:
        """Number of jobs in each local state (every state present, zero included)."""
        counts = dict.fromkeys(LocalState, 0)
        for job in self._jobs.values():
            counts[job.state] += 1
        return counts

    async def list_jobs(self, project: str | None = None, location: str | None = None,
                        states: Collection[LocalState] | None = None,
                        after_key: str | None = None, limit: int = 50,
                        labels: Mapping[str, str] | None = None) -> list[Job]:
        """Jobs newest first (created_at DESC, id DESC), at most `limit`, after `after_key`."""
        jobs, _ = await self.list_page(project, location, states, after_key, limit, labels)
        return jobs

    async def list_page(self, project: str | None = None, location: str | None = None,
                        states: Collection[LocalState] | None = None,
                        after_key: str | None = None, limit: int = 50,
                        labels: Mapping[str, str] | None = None) -> tuple[list[Job], str | None]:
        """One page of list_jobs plus the key of the next page (None on the last page)."""
        if limit < 1:
            raise errors.InvalidArgument(f"limit must be >= 1, got {limit}")
        after = parse_page_key(after_key) if after_key is not None else None
        wanted_states = {LocalState(s) for s in states} if states else None
        wanted_labels = dict(labels or {})
        matches = [
            job for job in self._jobs.values()
            if (project is None or job.project == project)
            and (location is None or job.location == location)
            and (wanted_states is None or job.state in wanted_states)
            and (after is None or _sort_key(job) < after)
            and all(self._labels[job.id].get(k) == v for k, v in wanted_labels.items())
        ]
        matches.sort(key=_sort_key, reverse=True)
        if len(matches) > limit:
            return matches[:limit], page_key(matches[limit - 1])
        return matches, None

    # ----- writes -----

    def _check_open(self) -> None:
        if self._closed:
            raise errors.StoreError("the job store cannot be written: it is closed")

    def _event(self, job_id: str, at: float, from_state: LocalState | None,
               to_state: LocalState, reason: str, detail: str) -> None:
        self._events.setdefault(job_id, []).append(
            _StoredEvent(float(at), from_state, to_state, reason, detail))

    async def create_or_get(self, job: Job, reason: str = "accepted",
                            detail: Mapping[str, Any] | None = None) -> tuple[Job, bool]:
        """Insert `job` with its first event, or return the job already holding its request_id
        in its project and location; (stored job, created)."""
        self._check_open()
        stored_detail = _detail(detail)
        if job.request_id is not None:
            existing = self._by_request.get((job.project, job.location, job.request_id))
            if existing is not None:
                return self._jobs[existing], False
        if job.id in self._jobs:
            raise errors.AlreadyExists(f"job {job.id} already exists")
        job = _normalized(job)
        self._jobs[job.id] = job
        self._labels[job.id] = _labels(job.spec_json)
        if job.request_id is not None:
            self._by_request[(job.project, job.location, job.request_id)] = job.id
        self._event(job.id, job.created_at, None, job.state, reason, stored_detail)
        return job, True

    async def insert_job(self, job: Job, reason: str = "accepted",
                         detail: Mapping[str, Any] | None = None) -> Job:
        """Like create_or_get, returning only the stored job."""
        stored, _ = await self.create_or_get(job, reason, detail)
        return stored

    async def apply(self, before: Job, after: Job, reason: str | None,
                    detail: Mapping[str, Any] | None = None, *,
                    notes: Sequence[str] = ()) -> None:
        """Store a transition (the row, `notes` then one event); StaleWrite, changing nothing,
        if the stored row is not `before` any more."""
        if before.id != after.id:
            raise ValueError(f"apply() got two different jobs: {before.id} -> {after.id}")
        self._check_open()
        stored_detail = _detail(detail)
        current = self._jobs.get(before.id)
        if (current is None or current.state != before.state
                or current.updated_at != float(before.updated_at)):
            raise StaleWrite(
                f"job {before.id}: stored row is not the expected {before.state.value} "
                f"@ {before.updated_at!r}; transition to {after.state.value} not stored")
        after = _normalized(after)
        self._jobs[after.id] = after
        for note in notes:
            self._event(after.id, after.updated_at, before.state, before.state, note, "{}")
        if reason is not None:
            self._event(after.id, after.updated_at, before.state, after.state, reason,
                        stored_detail)

    async def update_job(self, job: Job) -> None:
        """Store non-transition fields without an event; StaleWrite on another stored state."""
        self._check_open()
        current = self._jobs.get(job.id)
        if current is None or current.state != job.state:
            raise StaleWrite(
                f"job {job.id}: no stored row in state {job.state.value}; update not stored")
        self._jobs[job.id] = _normalized(job)

    async def prune_ended(self, ended_before: float, limit: int) -> int:
        """Delete up to `limit` ended jobs, oldest first, that ended before `ended_before`."""
        self._check_open()
        old = sorted((j for j in self._jobs.values() if j.state in TERMINAL_STATES
                      and j.ended_at is not None and j.ended_at < ended_before),
                     key=lambda j: (j.ended_at or 0.0, j.id))[:max(0, limit)]
        for job in old:
            del self._jobs[job.id]
            self._events.pop(job.id, None)
            self._labels.pop(job.id, None)
            if job.request_id is not None:
                self._by_request.pop((job.project, job.location, job.request_id), None)
        return len(old)

    async def size_bytes(self) -> int | None:
        """Nothing on disk."""
        return None

    async def check_writable(self) -> bool:
        """True until the store is closed."""
        return not self._closed

    async def close(self) -> None:
        """Refuse writes from now on (the contents stay readable)."""
        self._closed = True


if TYPE_CHECKING:
    # mypy proves here, not only the contract tests at run time, that this is a JobStore.
    _CONFORMS: JobStore = MemoryStore()
