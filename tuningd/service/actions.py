"""The remote calls the planner decides on: submit, reconcile, poll, cancel, sweep; their results.

Each action makes its Vertex call(s) outside any lock and hands what it learned to the ledger as
machine events; the verdicts on uncertain answers are recovery's, made in one place there.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from tuningd.adapters import failpoints
from tuningd.adapters.metrics import Metrics
from tuningd.core import errors, planner, recovery, schedule
from tuningd.core.errors import Code, RemoteError
from tuningd.core.machine import Event, RemoteSnapshot
from tuningd.core.model import LABEL_JOB_ID, Job, LocalState, is_ours, ours_labels
from tuningd.core.settings import EngineSettings
from tuningd.ports import JobList, VertexApi
from tuningd.service.breaker import Breaker
from tuningd.service.capacity import Capacity
from tuningd.service.ledger import Ledger
from tuningd.service.sweep import Sweeper, poll_filter
from tuningd.vertex import wire

# A poll list also asks for jobs created since its oldest job's createTime (to see the ones that
# ended); past this age that list could hold a long history, and ended jobs cost a GET instead.
ENDED_LOOKBACK_S = 6 * 3600.0

log = structlog.get_logger("tuningd.service.engine")


def _grpc_code(status: str) -> int:
    try:
        return int(Code[status])
    except KeyError:
        return int(Code.UNKNOWN)


class Actions:
    """Runs one planned action at a time per job; many may run at once across jobs."""

    def __init__(self, *, ledger: Ledger, capacity: Capacity, breaker: Breaker,
                 vertex_client: VertexApi, settings: Callable[[], EngineSettings],
                 metrics: Metrics | None, clock: Callable[[], float], rng: random.Random,
                 wake: Callable[[], None], may_create: Callable[[], bool] | None = None) -> None:
        self._ledger = ledger
        self._capacity = capacity
        self._breaker = breaker
        self._vertex = vertex_client
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._rng = rng
        self._wake = wake
        self._may_create = may_create
        # Next sweep time per place; places with a sweep in flight.
        self.sweep_at: dict[planner.Place, float] = {}
        self.sweeping: set[planner.Place] = set()
        # When a poll last got Vertex's answer (status views; None: not since the start).
        self.last_poll_success_at: float | None = None
        self._sweeper = Sweeper(
            list_place=self._list_labelled, cancel=self._cancel_remote, lookup=self._lookup,
            in_flight=capacity.busy.__contains__, adopt=self._adopt,
            cancel_unowned=lambda: settings().cancel_unowned, metrics=metrics, clock=clock)

    async def execute(self, action: planner.Action) -> None:
        handler = {
            planner.ActionKind.CANCEL: self._cancel,
            planner.ActionKind.SUBMIT: self._submit,
            planner.ActionKind.RECONCILE: self._reconcile,
            planner.ActionKind.POLL_LIST: self._poll_list,
            planner.ActionKind.POLL_GET: self._poll_get,
            planner.ActionKind.SWEEP: self._sweep,
        }[action.kind]
        await handler(action)

    # ------------------------------------------------------------------ create

    async def _submit(self, action: planner.Action) -> None:
        now = self._clock()
        job = await self._ledger.transition(action.job_id,
                                            Event.submit_started(next_action_at=now))
        if job is None or job.state is not LocalState.SUBMITTING:
            self._breaker.inconclusive(action.place)
            return
        failpoints.hit("submit.intent_written")
        # The body as the client sent it (canonical, at its version), plus tuningd's labels.
        body = job.spec
        body["labels"] = {**(body.get("labels") or {}), **ours_labels(job.id)}
        if self._may_create is not None and not self._may_create():
            # A create is the one call Vertex cannot fence: never sent without a valid lease.
            # The job stays submitting with its attempt open; the next leader reconciles it.
            log.warning("leader.create_withheld", job_id=job.id)
            return
        try:
            failpoints.hit_soon("create.awaiting_reply", 0.1)
            remote = await self._vertex.create(job.project, job.location, body,
                                               api_version=job.api_version)
            failpoints.hit("create.reply_received")
        except RemoteError as exc:
            await self._create_failed(job, exc)
            return
        except Exception as exc:
            # Whatever broke, the POST may have reached Vertex: only reconciliation may tell.
            log.exception("job.create_crashed", job_id=job.id)
            await self._create_failed(job, RemoteError(str(exc), http_status=500,
                                                       kind=errors.UNKNOWN_OUTCOME))
            return
        self._answered(action.place)
        snapshot = RemoteSnapshot.from_json(remote)
        after = await self._ledger.transition(job.id, Event.create_succeeded(snapshot),
                                              schedule=True)
        self._resolved(job, succeeded=True)
        if self._metrics is not None and after is not None:
            self._metrics.observe_queue_wait(self._clock() - job.created_at)

    def _resolved(self, job: Job, *, succeeded: bool) -> None:
        self._capacity.create_resolved(job, succeeded=succeeded,
                                       limits=self._settings().limits)

    async def _create_failed(self, job: Job, exc: RemoteError) -> None:
        """Route a failed create by recovery.create_verdict."""
        now = self._clock()
        s = self._settings()
        place = (job.project, job.location)
        verdict = recovery.create_verdict(exc.http_status, exc.status, exc.kind,
                                          message=exc.message,
                                          model=wire.base_model_id(job.base_model))
        if verdict is not recovery.CreateVerdict.UNKNOWN:
            self._resolved(job, succeeded=False)
        if verdict is recovery.CreateVerdict.INVALID:
            self._breaker.inconclusive(place)
            await self._ledger.transition(job.id, Event.create_rejected(
                _grpc_code(exc.status), exc.message))
        elif verdict is recovery.CreateVerdict.PLACE_REFUSED:
            self._breaker.refused(place, exc)
            self._ledger.version += 1
            # Due at once: the pause, not the job, decides when creates there go on.
            await self._ledger.transition(job.id, Event.create_deferred(
                retry_at=now, error_code=_grpc_code(exc.status),
                error_message=f"{exc.status} for the whole project and location, creates "
                              f"paused: {exc.message}"))
        elif verdict is recovery.CreateVerdict.REJECTED:
            self._answered(place)
            await self._ledger.transition(job.id, Event.create_rejected(
                _grpc_code(exc.status), exc.message))
        elif verdict is recovery.CreateVerdict.THROTTLED:
            self._answered(place)
            # The throttled job goes back to queued: it must not count in the new cap.
            self._capacity.create_throttled(job, self._ledger.jobs.values(), now)
            await self._ledger.transition(job.id, Event.create_throttled(
                retry_at=schedule.retry_at(job, now, s.retry, self._rng),
                error_code=_grpc_code(exc.status), error_message=exc.message))
        elif verdict is recovery.CreateVerdict.NOT_MADE:
            self._breaker.inconclusive(place)
            await self._ledger.transition(job.id, Event.create_deferred(
                retry_at=schedule.retry_at(job, now, s.retry, self._rng),
                error_code=_grpc_code(exc.status), error_message=f"{exc.status}: {exc.message}"))
        else:
            # The POST may have reached Vertex: reconcile, never resubmit blind. A first look
            # right away adopts a job whose reply was lost; only "absent" has to wait.
            self._breaker.inconclusive(place)
            self.count_unknown_outcome()
            await self._ledger.transition(job.id, Event.create_outcome_unknown(
                reconcile_at=now, error_code=_grpc_code(exc.status),
                error_message=f"{exc.status}: {exc.message}"))

    def _answered(self, place: planner.Place) -> None:
        if self._breaker.answered(place):
            self._ledger.version += 1
            self._wake()

    # ------------------------------------------------------------------ reconcile

    async def _list_labelled(self, project: str, location: str, flt: str,
                             api_version: str | None = None) -> JobList:
        """Every job matching a label filter; everything when the filter is refused (spec §8).

        Callers re-check labels client-side either way: the filter is not documented."""
        try:
            return await self._vertex.list_all(project, location, filter=flt,
                                               api_version=api_version)
        except RemoteError as exc:
            if exc.kind != errors.PERMANENT or exc.http_status != 400:
                raise
            return await self._vertex.list_all(project, location, api_version=api_version)

    def _by_version(self, job_ids: Sequence[str]) -> list[tuple[str, list[str]]]:
        """The jobs grouped by the API version their upstream calls use (one list call each:
        what a job's version shows, such as v1beta1 sub-states, must come back for it)."""
        groups: dict[str, list[str]] = {}
        for job_id in job_ids:
            job = self._ledger.jobs.get(job_id)
            version = self._vertex.version(job.api_version if job is not None else None)
            groups.setdefault(version, []).append(job_id)
        return sorted(groups.items())

    async def _reconcile(self, action: planner.Action) -> None:
        for version, ids in self._by_version(action.job_ids):
            await self._reconcile_at(action.project, action.location, ids, version)

    async def _reconcile_at(self, project: str, location: str, ids: list[str],
                            version: str) -> None:
        flt = " OR ".join(f'labels.{LABEL_JOB_ID}="{i}"' for i in ids)
        try:
            remotes = await self._list_labelled(project, location, flt, version)
        except RemoteError as exc:
            if exc.kind != errors.INVALID_REQUEST:
                self._count_reconciliation("error", len(ids))
                now = self._clock()
                for job_id in ids:
                    await self._transient(job_id, exc, now)
                return
            remotes = []  # nothing can ever exist under a parent that is no resource id
        by_job: dict[str, list[dict[str, Any]]] = {}
        for remote in remotes:
            label = (remote.get("labels") or {}).get(LABEL_JOB_ID)
            if label in ids:  # the filter is not documented: re-check every result (spec §8)
                by_job.setdefault(str(label), []).append(remote)
        now = self._clock()
        for job_id in ids:
            job = self._ledger.jobs.get(job_id)
            if job is None or job.state is not LocalState.SUBMITTING:
                continue
            found = sorted(by_job.get(job_id, []), key=lambda r: str(r.get("createTime", "")))
            if found:
                if len(found) > 1:
                    await self._handle_duplicates(job, found[1:])
                self._count_reconciliation("found")
                await self._ledger.transition(job_id, Event.reconciled_found(
                    RemoteSnapshot.from_json(found[0])), schedule=True)
                self._resolved(job, succeeded=True)
                continue
            verdict = recovery.absence_verdict(job, now, self._settings().reconcile)
            if verdict.absent:
                self._count_reconciliation("absent")
                self._resolved(job, succeeded=False)
                await self._ledger.transition(job_id, Event.reconciled_absent(retry_at=now))
            else:
                await self._ledger.transition(job_id, Event.reconcile_empty(
                    checks=verdict.checks, next_check_at=verdict.next_check_at))

    async def _handle_duplicates(self, job: Job, extras: Sequence[Mapping[str, Any]]) -> None:
        """Should never happen; if it does, keep the oldest and cancel the rest, loudly."""
        for remote in extras:
            name = str(remote.get("name", ""))
            self._count_reconciliation("duplicate")
            self._sweeper.already_reported(name.rsplit("/", 1)[-1])
            log.error("job.duplicate_remote", job_id=job.id, remote_name=name)
            try:
                await self._vertex.cancel(name, api_version=job.api_version)
            except RemoteError as exc:
                log.error("job.duplicate_cancel_failed", job_id=job.id, remote_name=name,
                          status=exc.status, error=exc.message)

    # ------------------------------------------------------------------ sweep

    async def _sweep(self, action: planner.Action) -> None:
        self.sweep_at[action.place] = self._clock() + self._settings().sweep_interval_s
        await self._sweeper.sweep(action.place)

    async def _cancel_remote(self, name: str, local: Job | None) -> None:
        """Cancel a swept remote job at the version of the local job it was made for."""
        await self._vertex.cancel(name, api_version=local.api_version if local else None)

    async def _lookup(self, job_id: str) -> Job | None:
        """A job by local id: the working set first, then (ended jobs) the store."""
        return self._ledger.jobs.get(job_id) or await self._ledger.store.get(job_id)

    async def _adopt(self, job: Job, remote: RemoteSnapshot) -> bool:
        """The sweep found the remote job a queued or submitting job waits for: adopt it."""
        adopted = await self._ledger.transition(job.id, Event.reconciled_found(remote),
                                                schedule=True)
        if adopted is None or adopted.remote_id != remote.remote_id:
            return False
        if job.state is LocalState.SUBMITTING:
            self._resolved(job, succeeded=True)
        return True

    # ------------------------------------------------------------------ polls

    async def _poll_list(self, action: planner.Action) -> None:
        swept = False
        for version, ids in self._by_version(action.job_ids):
            remotes = await self._poll_list_at(action.project, action.location, ids, version)
            if remotes is not None and not swept and action.place not in self.sweeping:
                # The poll asked for every active job of tuningd's there: it is a sweep too.
                swept = True
                self.sweeping.add(action.place)
                try:
                    self.sweep_at[action.place] = (self._clock()
                                                   + self._settings().sweep_interval_s)
                    await self._sweeper.examine(action.place, remotes)
                finally:
                    self.sweeping.discard(action.place)

    def _created_since(self, job_ids: Sequence[str], now: float) -> str | None:
        """The oldest createTime Vertex gave the jobs of a poll, if recent enough that a list
        of every job created since stays short (older: the ended ones cost a GET each)."""
        oldest: tuple[float, str] | None = None
        for job_id in job_ids:
            job = self._ledger.jobs.get(job_id)
            created = (job.remote or {}).get("createTime") if job is not None else None
            if not isinstance(created, str):
                return None
            try:
                at = wire.parse_timestamp(created)
            except errors.TuningdError:
                return None
            if oldest is None or at < oldest[0]:
                oldest = (at, created)
        if oldest is None or now - oldest[0] > ENDED_LOOKBACK_S:
            return None
        return oldest[1]

    async def _poll_list_at(self, project: str, location: str, job_ids: list[str],
                            version: str) -> JobList | None:
        try:
            remotes = await self._vertex.list_all(
                project, location, filter=poll_filter(self._created_since(job_ids,
                                                                          self._clock())),
                api_version=version)
        except RemoteError as exc:
            if exc.kind == errors.PERMANENT and exc.http_status == 400:
                log.warning("engine.batch_poll_refused", location=location,
                            error=exc.message)
                self._capacity.batch_refused.add(location)
                for job_id in job_ids:
                    await self._poll_one(job_id)
                return None
            now = self._clock()
            for job_id in job_ids:
                await self._transient(job_id, exc, now)
            return None
        self._mark_poll_success()
        by_remote_id: dict[str, dict[str, Any]] = {}
        for remote in remotes:
            if is_ours(remote.get("labels") or {}):
                by_remote_id[str(remote.get("name", "")).rsplit("/", 1)[-1]] = remote
        for job_id in job_ids:
            job = self._ledger.jobs.get(job_id)
            if job is None or job.remote_id is None:
                continue
            found = by_remote_id.get(job.remote_id)
            if found is None:
                # Not in the list (ended long ago, vanished, or the list lags): a GET says.
                await self._poll_one(job_id)
            else:
                await self._observe(job_id, found)
        return remotes

    async def _poll_get(self, action: planner.Action) -> None:
        for job_id in action.job_ids:
            await self._poll_one(job_id)

    async def _poll_one(self, job_id: str) -> None:
        job = self._ledger.jobs.get(job_id)
        if job is None or job.remote_name is None:
            return
        try:
            remote = await self._vertex.get(job.remote_name, api_version=job.api_version)
        except RemoteError as exc:
            if exc.http_status == 404:
                await self._not_found(job, exc)
            else:
                await self._transient(job_id, exc, self._clock())
            return
        self._mark_poll_success()
        await self._observe(job_id, remote)

    async def _not_found(self, job: Job, exc: RemoteError) -> None:
        """A read of the job's remote job said 404: recheck, then settle it by a label list."""
        now = self._clock()
        if recovery.after_not_found(job) is recovery.NotFoundStep.RECHECK_LATER:
            await self._ledger.transition(job.id, Event.remote_missing(
                recheck_at=now + self._settings().reconcile.not_found_confirm_s,
                error_message=exc.message))
            return
        try:
            remotes = await self._list_labelled(job.project, job.location,
                                                f'labels.{LABEL_JOB_ID}="{job.id}"',
                                                job.api_version)
        except RemoteError as list_exc:
            await self._transient(job.id, list_exc, now)
            return
        for remote in remotes:
            if str(remote.get("name", "")).rsplit("/", 1)[-1] == job.remote_id:
                await self._observe(job.id, remote)
                return
        await self._ledger.transition(job.id, Event.remote_not_found(exc.message))

    # ------------------------------------------------------------------ cancel

    async def _cancel(self, action: planner.Action) -> None:
        job = self._ledger.jobs.get(action.job_id)
        if job is None or job.remote_name is None:
            return
        now = self._clock()
        initial = self._settings().polling.initial_interval_s
        try:
            await self._vertex.cancel(job.remote_name, api_version=job.api_version)
        except RemoteError as exc:
            if exc.http_status == 404:
                await self._not_found(job, exc)
            elif exc.kind == errors.PERMANENT:
                # FAILED_PRECONDITION: it already ended. Stop asking, and poll to see how.
                await self._ledger.transition(job.id, Event.cancel_sent(
                    next_action_at=now, note=f"{exc.status}: {exc.message}"))
            else:
                await self._transient(job.id, exc, now)
            return
        failpoints.hit("cancel.sent")
        await self._ledger.transition(job.id, Event.cancel_sent(next_action_at=now + initial))

    # ------------------------------------------------------------------ results

    async def _observe(self, job_id: str, remote: Mapping[str, Any]) -> None:
        await self._ledger.transition(
            job_id, Event.remote_observed(RemoteSnapshot.from_json(remote)), schedule=True)

    async def _transient(self, job_id: str, exc: RemoteError, now: float) -> None:
        job = self._ledger.jobs.get(job_id)
        if job is None:
            return
        if exc.kind == errors.QUOTA:
            self._capacity.read_throttled(job.location, now)
        await self._ledger.transition(job_id, Event.transient_error(
            retry_at=schedule.retry_at(job, now, self._settings().retry, self._rng),
            error_code=_grpc_code(exc.status), error_message=f"{exc.status}: {exc.message}"))

    def _mark_poll_success(self) -> None:
        now = self._clock()
        self.last_poll_success_at = now
        if self._metrics is not None:
            self._metrics.mark_poll_success(now)

    def count_unknown_outcome(self) -> None:
        if self._metrics is not None:
            self._metrics.count_unknown_create_outcome()

    def _count_reconciliation(self, result: str, n: int = 1) -> None:
        if self._metrics is not None:
            for _ in range(n):
                self._metrics.count_reconciliation(result)

