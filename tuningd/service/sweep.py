"""The sweep: every place's active tuningd-labelled jobs, adopted, cancelled or reported.

Polls look only at the remote jobs local jobs track. A remote job that no tracked job owns (a
create that landed after it was presumed absent, a duplicate, a job of a lost database, another
daemon's) would run unseen and cost money; the sweep lists each place periodically, whatever its
local jobs are doing, and acts on what recovery.classify says each remote job is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog

from tuningd.adapters.metrics import Metrics
from tuningd.core import recovery
from tuningd.core.errors import RemoteError
from tuningd.core.machine import RemoteSnapshot
from tuningd.core.model import (
    LABEL_JOB_ID,
    LABEL_MANAGED,
    LEGACY_LABEL_MANAGED_BY,
    LEGACY_MANAGED_BY_VALUE,
    MANAGED_VALUE,
    REMOTE_TO_LOCAL,
    Job,
    LocalState,
    is_ours,
)
from tuningd.core.planner import Place
from tuningd.ports import RowDamaged

log = structlog.get_logger("tuningd.service.sweep")

# Remote states in which a job still costs or may still change; a list asks only for these, so
# it costs the same whatever the size of the history. Jobs labelled the way tuningd labelled them
# before issue 8 (managed-by=tuningd) are asked for too: they may still run.
_OURS = (f'(labels.{LABEL_MANAGED}="{MANAGED_VALUE}" OR '
         f'labels.{LEGACY_LABEL_MANAGED_BY}="{LEGACY_MANAGED_BY_VALUE}")')
_ACTIVE = " OR ".join(f'state="{s}"' for s in (
    "JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_CANCELLING",
    "JOB_STATE_PAUSED", "JOB_STATE_UPDATING"))
ACTIVE_REMOTE_FILTER = f"{_OURS} AND ({_ACTIVE})"


def poll_filter(created_since: str | None) -> str:
    """The poll list's filter: every active job of tuningd's (so the list is also a sweep)
    and, with `created_since` (a createTime Vertex gave), every one created since then in any
    state, so a job that just ended is seen in the same call instead of costing a GET."""
    if created_since is None:
        return ACTIVE_REMOTE_FILTER
    return f'{_OURS} AND ({_ACTIVE} OR create_time>="{created_since}")'



class Lister(Protocol):
    """Lists a place with a label filter (everything, if Vertex refuses the filter)."""

    async def __call__(self, project: str, location: str,
                       flt: str) -> Sequence[Mapping[str, Any]]: ...


class Sweeper:
    """Runs one sweep of a place at a time; remembers which findings it already reported."""

    def __init__(self, *, list_place: Lister,
                 cancel: Callable[[str, Job | None], Awaitable[None]],
                 lookup: Callable[[str], Awaitable[Job | None]],
                 in_flight: Callable[[str], bool],
                 adopt: Callable[[Job, RemoteSnapshot], Awaitable[bool]],
                 cancel_unowned: Callable[[], bool], metrics: Metrics | None,
                 clock: Callable[[], float]) -> None:
        self._list = list_place
        self._cancel = cancel
        self._lookup = lookup
        self._in_flight = in_flight
        self._adopt = adopt
        self._cancel_unowned = cancel_unowned
        self._metrics = metrics
        self._clock = clock
        # Remote ids already counted and logged: one report per finding, not one per sweep.
        self._reported: set[str] = set()

    def already_reported(self, remote_id: str) -> None:
        """A finding reported elsewhere (a duplicate seen while reconciling)."""
        self._reported.add(remote_id)

    async def sweep(self, place: Place) -> None:
        """List the place's active jobs of tuningd's; adopt, cancel or report the untracked."""
        try:
            remotes = await self._list(*place, ACTIVE_REMOTE_FILTER)
        except RemoteError as exc:
            log.warning("sweep.failed", project=place[0], location=place[1],
                        status=exc.status, error=exc.message)
            return
        await self.examine(place, remotes)

    async def examine(self, place: Place, remotes: Sequence[Mapping[str, Any]]) -> None:
        """Act on a list of the place that holds at least every active job of tuningd's (a
        sweep's own, or a poll's, which asks for those too): the sweep without its read."""
        unowned = 0
        for remote in sorted(remotes, key=lambda r: str(r.get("createTime", ""))):
            labels = remote.get("labels") or {}
            snapshot = RemoteSnapshot.from_json(remote)
            js = snapshot.job_state
            # Labels and states are re-checked here: the filter is not documented (spec §8).
            if not is_ours(labels) or (
                    js is not None and REMOTE_TO_LOCAL.get(js, LocalState.RUNNING).is_terminal):
                continue
            label = str(labels.get(LABEL_JOB_ID, ""))
            try:
                local = await self._lookup(label) if label else None
            except RowDamaged:
                continue  # its row is reported (store.row_damaged); never touch its remote job
            finding = recovery.classify(snapshot.remote_id, local,
                                        create_in_flight=self._in_flight(label))
            if finding in (recovery.Finding.OURS, recovery.Finding.UNDECIDED):
                continue
            if finding is recovery.Finding.ADOPT and local is not None:
                if await self._adopt(local, snapshot):
                    self._count(finding)
                    log.warning("sweep.adopted", job_id=local.id, remote_name=snapshot.name,
                                was=local.state.value)
                continue
            unowned += 1
            await self._unowned(finding, snapshot, local)
        if self._metrics is not None:
            self._metrics.set_unowned_remote_jobs(*place, unowned)
            self._metrics.mark_sweep(self._clock())

    async def _unowned(self, finding: recovery.Finding, snapshot: RemoteSnapshot,
                       local: Job | None) -> None:
        """Report a remote job no tracked job owns; cancel duplicates and late landings."""
        if snapshot.remote_id not in self._reported:
            self._reported.add(snapshot.remote_id)
            self._count(finding)
            log.error("sweep.unowned_remote_job", finding=finding.value,
                      remote_name=snapshot.name, remote_state=snapshot.state,
                      job_id=local.id if local is not None else None,
                      job_state=local.state.value if local is not None else None)
        if (finding is recovery.Finding.UNKNOWN or not self._cancel_unowned()
                or snapshot.state == "JOB_STATE_CANCELLING"):
            return  # a job no local id knows may be another daemon's: report, never touch
        try:
            await self._cancel(snapshot.name, local)
        except RemoteError as exc:
            if exc.http_status == 400:
                return  # FAILED_PRECONDITION: it has ended since (the list may lag)
            if self._metrics is not None:
                self._metrics.count_sweep_cancel(False)
            log.warning("sweep.cancel_failed", remote_name=snapshot.name, status=exc.status,
                        error=exc.message)
            return
        if self._metrics is not None:
            self._metrics.count_sweep_cancel(True)
        log.warning("sweep.cancelled", finding=finding.value, remote_name=snapshot.name,
                    job_id=local.id if local is not None else None)

    def _count(self, finding: recovery.Finding) -> None:
        if self._metrics is not None:
            self._metrics.count_sweep_finding(finding.value)
