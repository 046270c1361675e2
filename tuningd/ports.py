"""The ports the core owns: what the engine and the API need of a job store and of Vertex."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from tuningd.core import errors
from tuningd.core.model import Job, JobEvent, LocalState

__all__ = ["ChangeFeed", "Fenced", "Forwarded", "JobDict", "JobList", "JobStore", "Lease",
           "Leases", "RowDamaged", "StaleWrite", "VertexApi", "page_key", "parse_page_key",
           "prefix_end", "split_job_name"]

# A TuningJob in canonical (camelCase proto3 JSON) form, and a list of them.
JobDict = dict[str, Any]
JobList = list[JobDict]

_NAME_RE: Final = re.compile(
    r"projects/(?P<project>[A-Za-z0-9][A-Za-z0-9.:_-]*)"
    r"/locations/(?P<location>[a-z][a-z0-9-]*)"
    r"/tuningJobs/(?P<id>[A-Za-z0-9_-]+)"
)


def split_job_name(name: str) -> tuple[str, str, str]:
    """(project, location, job id) of `projects/{p}/locations/{l}/tuningJobs/{id}`."""
    match = _NAME_RE.fullmatch(name)
    if match is None:
        raise errors.InvalidArgument(f"not a tuning job name: {name!r}")
    return match["project"], match["location"], match["id"]


def page_key(job: Job) -> str:
    """The keyset-pagination key of a job: list_jobs(after_key=...) continues after it."""
    return f"{job.created_at!r}|{job.id}"


def parse_page_key(key: str) -> tuple[float, str]:
    """(created_at, job id) of a page_key; InvalidArgument for anything page_key cannot give."""
    created, sep, job_id = key.partition("|")
    try:
        if not sep:
            raise ValueError(key)
        return float(created), job_id
    except ValueError:
        raise errors.InvalidArgument(f"invalid page key {key!r}") from None


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (code point order, which
    is also the byte order of UTF-8 that SQLite's BINARY and PostgreSQL's "C" collations use),
    or None when there is none: `prefix <= id < prefix_end(prefix)` is the prefix as a range."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            # Surrogates cannot be stored as UTF-8: the next storable code point follows them.
            following = last + 1 if not 0xD800 <= last + 1 <= 0xDFFF else 0xE000
            return "".join(chars) + chr(following)
    return None


class StaleWrite(errors.Internal):
    """A write's `before` no longer matches the stored row: a bug, since there is one writer."""


class Fenced(errors.StoreError):
    """A write carried an engine epoch that is not the lease's any more: the writer was leader
    once and is not now, so it must stop acting (nothing was written)."""

    def __init__(self, epoch: int, current: int | None) -> None:
        super().__init__(
            f"this instance's engine lost the leadership (its epoch {epoch}, the lease's "
            f"{current}); another instance runs the queue", writing=True)
        self.epoch = epoch
        self.current = current


class RowDamaged(errors.StoreError):
    """A stored row that cannot be read back as a value (bad UTF-8, JSON, state or type).

    HTTP 503 where one job is asked for; lists and the engine skip such rows and report them.
    """

    def __init__(self, table: str, key: str, column: str, problem: str) -> None:
        super().__init__(
            f"the job store cannot be read: the stored row of job {key} is damaged "
            f"({table}.{column} {problem}); `tuningd store check` lists damaged rows",
            writing=False)
        self.table = table
        self.key = key
        self.column = column
        self.problem = problem


class JobStore(Protocol):
    """Jobs and their event history, durable once a write returns.

    Every failure of the medium is errors.StoreError (HTTP 503); a damaged row is RowDamaged
    where one job is read and left out (reported) where many are. The contract suite in
    tests/integration/test_store_contract.py is the full statement of the behaviour.
    """

    # ----- reads -----

    async def get(self, job_id: str) -> Job | None:
        """The job with this local id, or None."""
        ...

    async def get_by_request_id(self, project: str, location: str,
                                request_id: str) -> Job | None:
        """The job created with this requestId in this project and location, or None."""
        ...

    async def history(self, job_id: str) -> list[JobEvent]:
        """The job's events, oldest first."""
        ...

    async def active_and_queued(self) -> list[Job]:
        """Every non-terminal job (the engine's working set), oldest first."""
        ...

    async def places(self) -> list[tuple[str, str]]:
        """Every (project, location) any job was ever accepted for, sorted."""
        ...

    async def count_by_state(self) -> dict[LocalState, int]:
        """Number of jobs in each local state (every state present, zero included)."""
        ...

    async def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Ids of the jobs whose local id starts with `prefix` (non-empty), in id order, at most
        `limit`: a range read of the primary key, so its cost is the answer's, not the store's."""
        ...

    async def list_jobs(self, project: str | None = None, location: str | None = None,
                        states: Collection[LocalState] | None = None,
                        after_key: str | None = None, limit: int = 50,
                        labels: Mapping[str, str] | None = None) -> list[Job]:
        """Jobs newest first (created_at DESC, id DESC), at most `limit`, after `after_key`.
        `project` / `location` None means every project / location the store holds."""
        ...

    async def list_page(self, project: str | None = None, location: str | None = None,
                        states: Collection[LocalState] | None = None,
                        after_key: str | None = None, limit: int = 50,
                        labels: Mapping[str, str] | None = None) -> tuple[list[Job], str | None]:
        """One page of list_jobs plus the key of the next page (None on the last page)."""
        ...

    # ----- writes -----

    async def create_or_get(self, job: Job, reason: str = "accepted",
                            detail: Mapping[str, Any] | None = None) -> tuple[Job, bool]:
        """Insert `job` with its first event, or return the job already holding its
        request_id in its project and location; (stored job, created)."""
        ...

    async def apply(self, before: Job, after: Job, reason: str | None,
                    detail: Mapping[str, Any] | None = None, *,
                    notes: Sequence[str] = ()) -> None:
        """Store a transition (the row, `notes` then one event) atomically; StaleWrite if the
        stored row is not `before` any more."""
        ...

    async def update_job(self, job: Job) -> None:
        """Store non-transition fields without an event; StaleWrite on another stored state."""
        ...

    async def prune_ended(self, ended_before: float, limit: int) -> int:
        """Delete up to `limit` ended jobs (the oldest first) that ended before `ended_before`,
        with their events and labels, in one transaction; the number deleted. Never a job that
        has not ended."""
        ...

    async def size_bytes(self) -> int | None:
        """What the store takes on disk (None where that means nothing, e.g. in memory)."""
        ...

    async def check_writable(self) -> bool:
        """True if the store still accepts a durable write (for /readyz)."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release the store."""
        ...


@dataclass(frozen=True)
class Lease:
    """Who runs the engine: the holder's instance id, its fencing epoch (grows by one at every
    change of holder) and how long the lease has left by the store's clock."""

    holder: str
    epoch: int
    remaining_s: float


@runtime_checkable
class Leases(Protocol):
    """The engine's leadership among instances sharing one store (PostgreSQL, memory).

    At most one holder at a time by the store's clock; a holder that does not renew within
    `ttl_s` loses it to the next acquire, which gets a larger epoch. A store whose writes the
    engine makes through `fenced(epoch)` refuses them (Fenced) once the epoch is stale.
    """

    async def acquire(self, holder: str, ttl_s: float) -> Lease | None:
        """Take the lease if it is free or expired, or renew it if `holder` has it already;
        the lease now held, or None while another holder's lease runs."""
        ...

    async def renew(self, holder: str, epoch: int, ttl_s: float) -> bool:
        """Extend the lease `holder` holds at `epoch`; False if it is not theirs any more."""
        ...

    async def release(self, holder: str, epoch: int) -> None:
        """Give the lease up at once (a clean shutdown), if still held at `epoch`."""
        ...

    async def current(self) -> Lease | None:
        """The lease as the store has it now (None: never taken or released)."""
        ...

    def fenced(self, epoch: int) -> JobStore:
        """This store, with every write refused (Fenced) unless the lease's epoch is `epoch`
        in the same transaction as the write."""
        ...


@runtime_checkable
class ChangeFeed(Protocol):
    """Job ids written by other instances sharing the store, as they commit."""

    def changes(self) -> AsyncIterator[str]:
        """Ids of jobs created or changed by any writer; "*" after a gap (a lost connection)
        means anything may have changed: reread everything."""
        ...

    async def listening(self) -> None:
        """Return once a changes() iterator surely hears the next write (PostgreSQL: its LISTEN
        connection is up); at once where subscribing takes no round trip (memory)."""
        ...


@dataclass(frozen=True)
class Forwarded:
    """Vertex's answer to a forwarded call, as it came: status, headers, raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class VertexApi(Protocol):
    """Vertex's tuningJobs API as the engine and the pass-through use it.

    Every failure is an errors.RemoteError whose `kind` says what the caller may do next.
    """

    def version(self, api_version: str | None) -> str:
        """The API version a call made at `api_version` uses (None: the default)."""
        ...

    async def create(self, project: str, location: str, job: Mapping[str, Any], *,
                     api_version: str | None = None) -> JobDict:
        """Create a job from a canonical TuningJob; the created job. Never retried inside:
        a failure that may have created it is kind UNKNOWN_OUTCOME."""
        ...

    async def get(self, name: str, *, api_version: str | None = None) -> JobDict:
        """One job by its full resource name."""
        ...

    async def list_all(self, project: str, location: str, *, filter: str = "",
                       page_size: int = 100, max_pages: int = 10_000,
                       api_version: str | None = None) -> JobList:
        """Every job of a place matching an AIP-160 filter, all pages followed."""
        ...

    async def cancel(self, name: str, *, api_version: str | None = None) -> None:
        """Ask Vertex to cancel a job."""
        ...

    async def forward(self, http_method: str, path: str, *, location: str, api_version: str,
                      query: Sequence[tuple[str, str]] = (),
                      body: bytes | None = None) -> Forwarded:
        """One call outside tuningJobs CRUD, answered as it came (the pass-through)."""
        ...
