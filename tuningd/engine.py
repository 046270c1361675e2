"""The engine: runs the policy's decisions through the store and the Vertex client, one job at a time."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuningd.model import Job, JobEvent

JobPredicate = Callable[[Job], bool]


@dataclass(frozen=True)
class Page:
    """One page of a job listing, newest first."""

    jobs: Sequence[Job]
    next_key: str | None


class Engine:
    """Facade used by the control API (contract; the loop itself is filled in below).

    - submit(): validated canonical TuningJob `spec` (tuningd labels not included) -> stored
      queued Job; with a request_id already seen for the same project/location, the existing
      job is returned and `created` is False. Raises errors.Unavailable while draining.
    - get()/history(): None / [] for unknown ids.
    - list_jobs(): newest first, keyset pagination by an opaque key; `predicate` filters in
      memory (labels, state, display name...).
    - cancel(): queued -> cancelled at once; active -> cancel intent stored. Raises
      errors.NotFound for unknown ids, errors.FailedPrecondition for ended jobs.
    - queue_position(): 1-based position among queued jobs in submission order, else None.
    """

    draining: bool = False

    async def submit(self, project: str, location: str, spec: Mapping[str, Any], *,
                     priority: int = 0, request_id: str | None = None) -> tuple[Job, bool]:
        raise NotImplementedError

    async def get(self, job_id: str) -> Job | None:
        raise NotImplementedError

    async def history(self, job_id: str) -> list[JobEvent]:
        raise NotImplementedError

    async def list_jobs(self, project: str, location: str, *, predicate: JobPredicate | None,
                        page_size: int, after_key: str | None) -> Page:
        raise NotImplementedError

    async def cancel(self, job_id: str) -> Job:
        raise NotImplementedError

    def queue_position(self, job: Job) -> int | None:
        raise NotImplementedError

    def ready(self) -> bool:
        """Start-up work done (store open, reconciliation started) and not draining."""
        raise NotImplementedError
