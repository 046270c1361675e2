"""An in-memory JobStore with leases and a change feed: the shared store's contract without a disk.

Several `MemoryStore`s over one `MemoryBacking` behave like several instances' connections to one
database (PostgreSQL): one lease, one set of jobs, every write told to every feed subscriber.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tuningd.core import errors
from tuningd.core.model import TERMINAL_STATES, Job, JobEvent, LocalState
from tuningd.ports import (
    ChangeFeed,
    Fenced,
    JobStore,
    Lease,
    Leases,
    StaleWrite,
    page_key,
    parse_page_key,
)

__all__ = ["GAP", "MemoryBacking", "MemoryStore"]

# What a feed yields after a gap: anything may have changed.
GAP = "*"

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


@dataclasses.dataclass
class _LeaseRow:
    holder: str
    epoch: int
    expires_at: float
    released: bool = False


class _Subscription:
    """One subscriber's queue of changed job ids; registered from creation, so nothing written
    after `changes()` returned is missed even before the first `anext`."""

    def __init__(self, backing: MemoryBacking) -> None:
        self._backing = backing
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        backing.subscribers.add(self._queue)

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> str:
        return await self._queue.get()

    async def aclose(self) -> None:
        self._backing.subscribers.discard(self._queue)


class MemoryBacking:
    """The state several MemoryStore connections share: jobs, events, the lease, subscribers.

    `clock` is the store's clock for leases (injectable, so tests move time by hand).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self.events: dict[str, list[_StoredEvent]] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.by_request: dict[tuple[str, str, str], str] = {}
        self.lease: _LeaseRow | None = None
        self.last_epoch = 0
        self.subscribers: set[asyncio.Queue[str]] = set()

    def changed(self, job_id: str) -> None:
        for queue in self.subscribers:
            queue.put_nowait(job_id)

    def inject_gap(self) -> None:
        """Tell every subscriber "*", as a feed does after it lost its connection (tests)."""
        self.changed(GAP)

    def live(self, now: float) -> _LeaseRow | None:
        lease = self.lease
        if lease is None or lease.released or lease.expires_at <= now:
            return None
        return lease

    def connect(self) -> MemoryStore:
        """A new connection to this shared state (another instance's store)."""
        return MemoryStore(self)


class MemoryStore:
    """Jobs and events in dicts; every write is atomic because it never awaits midway.

    Nothing survives the process: use it where the store's durability is not what is tested.
    Built alone it has its own backing; `MemoryBacking.connect()` shares one.
    """

    def __init__(self, backing: MemoryBacking | None = None) -> None:
        self.path = ":memory:"
        self.backing = backing if backing is not None else MemoryBacking()
        # Aliases of the shared dicts (never rebound), so every connection sees every write.
        self._jobs = self.backing.jobs
        self._events = self.backing.events
        self._labels = self.backing.labels
        self._by_request = self.backing.by_request
        self._closed = False

    @classmethod
    async def open(cls, backing: MemoryBacking | None = None) -> MemoryStore:
        """A new, empty store, or a new connection to `backing` (the shape of Store.open)."""
        return cls(backing)

    # ----- reads -----

    async def get(self, job_id: str) -> Job | None:
        """The job with this local id, or None."""
        return self._jobs.get(job_id)

    async def get_by_request_id(self, project: str, location: str,
                                request_id: str) -> Job | None:
        """The job created with this requestId in this project and location, or None."""
        job_id = self._by_request.get((project, location, request_id))
        return None if job_id is None else self._jobs[job_id]

    async def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Ids starting with `prefix`, in id order, at most `limit`."""
        if not prefix:
            raise errors.InvalidArgument("an id prefix must not be empty")
        if limit < 1:
            raise errors.InvalidArgument(f"limit must be >= 1, got {limit}")
        return sorted(i for i in self._jobs if i.startswith(prefix))[:limit]

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
        self.backing.changed(job.id)
        return job, True

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
        self.backing.changed(after.id)

    async def update_job(self, job: Job) -> None:
        """Store non-transition fields without an event; StaleWrite on another stored state."""
        self._check_open()
        current = self._jobs.get(job.id)
        if current is None or current.state != job.state:
            raise StaleWrite(
                f"job {job.id}: no stored row in state {job.state.value}; update not stored")
        self._jobs[job.id] = _normalized(job)
        self.backing.changed(job.id)

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

    # ----- leases (tuningd.ports.Leases) -----

    async def acquire(self, holder: str, ttl_s: float) -> Lease | None:
        """Take the lease if it is free or expired (a new epoch), or renew it if `holder` holds
        it live already (same epoch); None while another holder's lease runs."""
        self._check_open()
        b = self.backing
        now = b.clock()
        live = b.live(now)
        if live is not None and live.holder != holder:
            return None
        if live is None:
            b.last_epoch += 1
            b.lease = live = _LeaseRow(holder, b.last_epoch, now + ttl_s)
        else:
            live.expires_at = now + ttl_s
        return Lease(live.holder, live.epoch, ttl_s)

    async def renew(self, holder: str, epoch: int, ttl_s: float) -> bool:
        """Extend the live lease `holder` holds at `epoch`; False once it expired or passed."""
        self._check_open()
        b = self.backing
        now = b.clock()
        live = b.live(now)
        if live is None or live.holder != holder or live.epoch != epoch:
            return False
        live.expires_at = now + ttl_s
        return True

    async def release(self, holder: str, epoch: int) -> None:
        """Give the lease up at once, if `holder` still holds it at `epoch`."""
        self._check_open()
        lease = self.backing.lease
        if lease is not None and lease.holder == holder and lease.epoch == epoch:
            lease.released = True

    async def current(self) -> Lease | None:
        """The lease as stored (remaining_s is 0 once expired); None if never taken or released."""
        lease = self.backing.lease
        if lease is None or lease.released:
            return None
        return Lease(lease.holder, lease.epoch,
                     max(0.0, lease.expires_at - self.backing.clock()))

    def fenced(self, epoch: int) -> JobStore:
        """This store with every write refused (Fenced, nothing written) unless the lease's
        epoch is still `epoch`."""
        return _FencedMemoryStore(self, epoch)

    # ----- change feed (tuningd.ports.ChangeFeed) -----

    def changes(self) -> AsyncIterator[str]:
        """Every write's job id, from now on ("*": a gap, reread everything)."""
        return _Subscription(self.backing)

    async def listening(self) -> None:
        """A subscription hears every later write from the moment it exists."""


class _FencedMemoryStore:
    """A MemoryStore whose writes carry an epoch: the check and the write never await between."""

    def __init__(self, store: MemoryStore, epoch: int) -> None:
        self._store = store
        self._epoch = epoch
        self.path = store.path

    def _check(self) -> None:
        lease = self._store.backing.lease
        current = None if lease is None else lease.epoch
        if current != self._epoch:
            raise Fenced(self._epoch, current)

    def __getattr__(self, name: str) -> Any:
        # Reads pass through unchanged.
        return getattr(self._store, name)

    async def close(self) -> None:
        """A view: the store it looks through stays open."""

    async def create_or_get(self, job: Job, reason: str = "accepted",
                            detail: Mapping[str, Any] | None = None) -> tuple[Job, bool]:
        self._check()
        return await self._store.create_or_get(job, reason, detail)

    async def apply(self, before: Job, after: Job, reason: str | None,
                    detail: Mapping[str, Any] | None = None, *,
                    notes: Sequence[str] = ()) -> None:
        self._check()
        await self._store.apply(before, after, reason, detail, notes=notes)

    async def update_job(self, job: Job) -> None:
        self._check()
        await self._store.update_job(job)


if TYPE_CHECKING:
    # mypy proves here, not only the contract tests at run time, that this is a JobStore.
    _CONFORMS: JobStore = MemoryStore()
    _LEASES: Leases = MemoryStore()
    _FEED: ChangeFeed = MemoryStore()
