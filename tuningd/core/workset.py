"""The working set of non-terminal jobs, indexed so a planning round costs what can act, not the
queue: active jobs apart, queued jobs in groups that share every limit scope and pause."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import TypeVar, overload

from tuningd.config import SchedulingSettings
from tuningd.core.model import Job, LocalState
from tuningd.core.schedule import effective_priority
from tuningd.vertex.wire import base_model_id

# A group's order is re-sorted at most this often: aging moves effective priorities in steps of
# `aging_interval_s` (minutes), so an order a second old differs from a fresh one only for jobs
# whose step fell inside that second. Jobs added since the sort are placed by a binary search.
RESORT_S = 1.0

GroupKey = tuple[str, str, str]  # (project, location, bare base model id)

SortKey = tuple[int, float, str]

_T = TypeVar("_T")


def group_key(job: Job) -> GroupKey:
    """Queued jobs with one key share every limit scope (global, location, base model) and the
    create pause of their place, so one full scope or one pause holds the whole group."""
    return (job.project, job.location, base_model_id(job.base_model))


def sort_key(job: Job, now: float, settings: SchedulingSettings) -> SortKey:
    """Queue order: effective priority down, then oldest, then id (as schedule.queue_order)."""
    return (-effective_priority(job, now, settings), job.created_at, job.id)


class QueueGroup:
    """The queued jobs of one group; its order is computed lazily and kept for RESORT_S."""

    __slots__ = ("_by_age", "_keys", "_order", "_priorities", "_settings", "_sorted_at", "jobs",
                 "key")

    def __init__(self, key: GroupKey) -> None:
        self.key = key
        self.jobs: dict[str, Job] = {}
        self._order: list[str] = []
        self._keys: list[SortKey] = []
        self._sorted_at: float | None = None
        self._settings: SchedulingSettings | None = None
        # (created_at, id), lazily cleaned: the oldest queued job without a walk.
        self._by_age: list[tuple[float, str]] = []
        # Jobs per priority: with one priority, aging never reorders the group (an older job
        # always has at least the newer one's bonus), so time alone needs no new sort.
        self._priorities: dict[int, int] = {}

    def add(self, job: Job) -> None:
        known = job.id in self.jobs
        self.jobs[job.id] = job
        if known:
            return
        self._priorities[job.priority] = self._priorities.get(job.priority, 0) + 1
        heapq.heappush(self._by_age, (job.created_at, job.id))
        if self._sorted_at is None or self._settings is None:
            return
        # Placed with the priorities of the last sort, so a burst of creates costs a binary
        # search each, not a sort each.
        key = sort_key(job, self._sorted_at, self._settings)
        at = bisect.bisect_right(self._keys, key)
        self._keys.insert(at, key)
        self._order.insert(at, job.id)

    def remove(self, job_id: str) -> None:
        job = self.jobs.pop(job_id, None)
        if job is None:
            return
        left = self._priorities[job.priority] - 1
        if left:
            self._priorities[job.priority] = left
        else:
            del self._priorities[job.priority]
        if self._sorted_at is None or self._settings is None:
            return
        # Found by its key as of the last sort (ids are unique, so the key is too).
        at = bisect.bisect_left(self._keys, sort_key(job, self._sorted_at, self._settings))
        if at < len(self._order) and self._order[at] == job_id:
            del self._keys[at]
            del self._order[at]
        else:  # not where its key says (cannot happen while keys hold): sort again on use
            self._sorted_at = None

    def _fresh(self, now: float, settings: SchedulingSettings) -> float:
        """The time of a sort at most RESORT_S old (sorting now if needed)."""
        if (self._sorted_at is None or settings is not self._settings
                or (len(self._priorities) > 1
                    and (now - self._sorted_at >= RESORT_S or now < self._sorted_at))):
            pairs = sorted((sort_key(j, now, settings), j.id) for j in self.jobs.values())
            self._keys = [k for k, _ in pairs]
            self._order = [i for _, i in pairs]
            self._sorted_at = now
            self._settings = settings
        return self._sorted_at

    def ordered(self, now: float, settings: SchedulingSettings) -> Iterator[Job]:
        """The group's queued jobs in queue order as of a sort at most RESORT_S old."""
        self._fresh(now, settings)
        for job_id in self._order:
            job = self.jobs.get(job_id)
            if job is not None:
                yield job

    def ahead_of(self, job: Job, now: float, settings: SchedulingSettings) -> int:
        """How many of this group's jobs come before `job` in queue order (as of the sort)."""
        at = self._fresh(now, settings)
        return bisect.bisect_left(self._keys, sort_key(job, at, settings))

    def oldest_created_at(self) -> float | None:
        heap = self._by_age
        while heap and heap[0][1] not in self.jobs:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


@dataclass(frozen=True)
class QueueStats:
    """What the gauges need of the queue without walking it."""

    depth: int
    oldest_created_at: float | None


class WorkingSet(MutableMapping[str, Job]):
    """Every non-terminal job by id, with the active ones (everything not queued) apart and the
    queued ones grouped by GroupKey. Terminal jobs do not belong here (the ledger drops them)."""

    def __init__(self) -> None:
        self._all: dict[str, Job] = {}
        self.active: dict[str, Job] = {}
        self.groups: dict[GroupKey, QueueGroup] = {}
        self._group_of: dict[str, GroupKey] = {}

    # -- MutableMapping

    def __getitem__(self, job_id: str) -> Job:
        return self._all[job_id]

    def __setitem__(self, job_id: str, job: Job) -> None:
        self._unindex(job_id)
        self._all[job_id] = job
        if job.state is LocalState.QUEUED:
            key = group_key(job)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = QueueGroup(key)
            group.add(job)
            self._group_of[job_id] = key
        else:
            self.active[job_id] = job

    def __delitem__(self, job_id: str) -> None:
        del self._all[job_id]
        self._unindex(job_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._all

    @overload
    def get(self, job_id: str, /) -> Job | None: ...

    @overload
    def get(self, job_id: str, /, default: Job | _T) -> Job | _T: ...

    def get(self, job_id: str, /, default: object = None) -> object:
        return self._all.get(job_id, default)

    def _unindex(self, job_id: str) -> None:
        if self.active.pop(job_id, None) is not None:
            return
        key = self._group_of.pop(job_id, None)
        if key is None:
            return
        group = self.groups[key]
        group.remove(job_id)
        if not group.jobs:
            del self.groups[key]

    # -- queries

    def queued(self, job_id: str) -> Job | None:
        """The job if it is queued."""
        key = self._group_of.get(job_id)
        return None if key is None else self.groups[key].jobs.get(job_id)

    def position(self, job_id: str, now: float, settings: SchedulingSettings) -> int | None:
        """1-based place of a queued job in the submission order, from each group's sorted
        order (at most RESORT_S old): O(groups x log queue), no walk."""
        job = self.queued(job_id)
        if job is None:
            return None
        return 1 + sum(group.ahead_of(job, now, settings) for group in self.groups.values())

    def queue_stats(self) -> QueueStats:
        """Depth and oldest acceptance time: O(groups)."""
        depth = 0
        oldest: float | None = None
        for group in self.groups.values():
            depth += len(group.jobs)
            first = group.oldest_created_at()
            if first is not None:
                oldest = first if oldest is None else min(oldest, first)
        return QueueStats(depth, oldest)

    def locations(self) -> set[str]:
        return {j.location for j in self.active.values()} | {k[1] for k in self.groups}

