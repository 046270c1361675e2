"""Leadership among instances sharing one store: exactly one runs the engine, every one serves.

An instance tries `acquire` every `ha.acquire_interval_s`. Holding the lease, it starts an Engine
over `store.fenced(epoch)` (whose start reconciles what a former leader left in flight), renews
every ttl/3, and consumes the store's change feed (creates and cancel intents written by the
standbys). It stops the engine at once, without waiting for anything, when

- a renew is refused or fails past the fence deadline,
- its own monotonic time since the start of the last good renew passes `ha.fence_after_s`
  (checked by the renew loop and before every Vertex create: a create cannot be fenced),
- any write raises Fenced (another instance holds a newer epoch: this one was paused).

Without the lease, or while the engine starts, the API is served by the standby facade.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, cast

import structlog

from tuningd.adapters.metrics import Metrics
from tuningd.config_ha import HaSettings
from tuningd.core import errors, planner, recovery
from tuningd.core.model import Job, JobEvent, LocalState
from tuningd.core.overview import InstanceRole, Overview
from tuningd.ports import ChangeFeed, Fenced, JobStore, Lease, Leases
from tuningd.service.engine import Engine
from tuningd.service.facade import JobPredicate, JobService, Page
from tuningd.service.standby import Standby

log = structlog.get_logger("tuningd.leadership")

__all__ = ["FEED_GAP", "FenceWatch", "Leadership", "Role"]

# What the change feed yields after a gap: reread every job.
FEED_GAP = "*"
# After a failed renew, try again this often (as a share of the renew interval) until the fence.
_RETRY_SHARE = 0.25

EngineFactory = Callable[[JobStore, Callable[[], bool]], Engine]


class Role:
    LEADER = "leader"
    STANDBY = "standby"


class FenceWatch:
    """A fenced store that tells its owner the moment any write is refused as Fenced (so a
    write whose caller swallows errors still stops the engine)."""

    def __init__(self, store: JobStore, on_fenced: Callable[[Fenced], None]) -> None:
        self._store = store
        self._on_fenced = on_fenced

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _write(self, call: Any) -> Any:
        try:
            return await call
        except Fenced as exc:
            self._on_fenced(exc)
            raise

    async def create_or_get(self, job: Job, reason: str = "accepted",
                            detail: Mapping[str, Any] | None = None) -> tuple[Job, bool]:
        return cast(tuple[Job, bool],
                    await self._write(self._store.create_or_get(job, reason, detail)))

    async def apply(self, before: Job, after: Job, reason: str | None,
                    detail: Mapping[str, Any] | None = None, *,
                    notes: Sequence[str] = ()) -> None:
        await self._write(self._store.apply(before, after, reason, detail, notes=notes))

    async def update_job(self, job: Job) -> None:
        await self._write(self._store.update_job(job))


class Leadership:
    """The JobService of an instance on a shared store: the engine while it leads, the
    standby facade otherwise; `run` takes, keeps and loses the lease."""

    def __init__(self, store: JobStore, *, settings: HaSettings, holder: str,
                 make_engine: EngineFactory, standby: Standby, metrics: Metrics | None = None,
                 drain_s: float = 10.0, monotonic: Callable[[], float] = time.monotonic,
                 on_progress: Callable[[], None] | None = None) -> None:
        if not isinstance(store, Leases) or not isinstance(store, ChangeFeed):
            raise TypeError("leadership needs a store with leases and a change feed")
        self._store = store
        self._leases: Leases = store
        self._feed: ChangeFeed = store
        self.settings = settings
        self.holder = holder
        self._make_engine = make_engine
        self._standby = standby
        self._metrics = metrics
        self._drain_s = drain_s
        self._mono = monotonic
        # The watchdog's ping while no engine loop runs here (a standby).
        self._on_progress = on_progress
        self.role = Role.STANDBY
        self.epoch: int | None = None
        # The lease as last seen (whoever holds it), for status.
        self.lease: Lease | None = None
        self.engine: Engine | None = None
        self._candidate: Engine | None = None
        self._renewed_at = 0.0
        self._lost = asyncio.Event()
        # Set when this instance became leader / stopped being it (tests wait on these).
        self.became_leader = asyncio.Event()
        self.stepped_down = asyncio.Event()
        self.draining = False

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """Role, instance id, epoch and the lease's holder, for the status JSON."""
        lease = self.lease
        return {"role": self.role, "instance_id": self.holder, "epoch": self.epoch,
                "leader": None if lease is None else lease.holder,
                "leader_epoch": None if lease is None else lease.epoch}

    def lease_valid(self) -> bool:
        """Whether this instance may still act as leader by its own monotonic clock (asked
        before every Vertex create); a no stops the engine at once."""
        if self._lost.is_set():
            return False
        if self._mono() - self._renewed_at < self.settings.fence_after_s:
            return True
        self._lose("lease_expired", "no good renew within ha.lease_ttl_s - ha.fence_margin_s")
        return False

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Try for the lease every acquire interval; lead while holding it; until `stop`."""
        while not stop.is_set():
            started = self._mono()
            lease = await self._try_acquire()
            if lease is not None and lease.holder == self.holder:
                await self._lead(lease, started, stop)
                if stop.is_set():
                    break
            await self._refresh_standby()
            if self._on_progress is not None:
                self._on_progress()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.acquire_interval_s)
        self.draining = True

    async def _try_acquire(self) -> Lease | None:
        try:
            lease = await self._leases.acquire(self.holder, self.settings.lease_ttl_s)
            self.lease = lease if lease is not None else await self._leases.current()
        except errors.TuningdError as exc:
            log.warning("leader.acquire_failed", error=exc.message)
            return None
        return lease

    async def _refresh_standby(self) -> None:
        try:
            await self._standby.refresh()
        except errors.TuningdError as exc:
            log.warning("standby.refresh_failed", error=exc.message)

    async def _lead(self, lease: Lease, renew_started: float, stop: asyncio.Event) -> None:
        """Run the engine for one epoch, until the lease is lost or the daemon stops."""
        self._lost.clear()
        self._renewed_at = renew_started
        self.epoch = lease.epoch
        # Listening before the engine reads its working set, so no write falls in between; what
        # comes meanwhile waits in `heard` and is taken in once the engine has started.
        feed = self._feed.changes()
        heard: asyncio.Queue[str] = asyncio.Queue()
        store = cast(JobStore, FenceWatch(self._leases.fenced(lease.epoch), self._on_fenced))
        engine = self._candidate = self._make_engine(store, self.lease_valid)
        engine_stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = [
            asyncio.create_task(self._renew_loop(lease.epoch), name="lease-renew"),
            asyncio.create_task(self._pump(feed, heard), name="change-feed")]
        clean = False
        try:
            await self._feed_listening()
            starting = asyncio.create_task(engine.start(), name="engine-start")
            if not await self._until_lost(stop, starting, *tasks) or not starting.done():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                return
            starting.result()
            self.engine = engine
            self._set_role(Role.LEADER)
            log.info("leader.acquired", instance_id=self.holder, epoch=lease.epoch)
            tasks += [asyncio.create_task(engine.run(engine_stop), name="engine"),
                      asyncio.create_task(self._consume(heard, engine), name="feed-absorb")]
            await self._until_lost(stop, *tasks)
            clean = stop.is_set() and not self._lost.is_set()
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("leader.task_failed", task=task.get_name(),
                              error=repr(task.exception()))
                    clean = False
        except Exception as exc:  # a failed start: give the lease up, try again later
            log.error("leader.start_failed", error=repr(exc))
        finally:
            engine_stop.set()
            if clean:
                self.draining = True
                await engine.drain(self._drain_s)  # a clean stop: calls in flight finish
            else:
                engine.halt()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await cast(Any, feed).aclose()
            # Free at once for a standby (a no-op if another instance holds it already): the
            # creates abandoned here reconcile under the next leader like a crash's.
            with contextlib.suppress(errors.TuningdError):
                await self._leases.release(self.holder, lease.epoch)
            self.engine = self._candidate = None
            self.epoch = None
            self._set_role(Role.STANDBY)

    async def _until_lost(self, stop: asyncio.Event, *tasks: asyncio.Task[None]) -> bool:
        """Wait until the lease is lost, the daemon stops or one of `tasks` ends; True if
        neither the lease was lost nor the daemon stopped."""
        lost = asyncio.create_task(self._lost.wait())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({lost, stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            stopping.cancel()
        return not self._lost.is_set() and not stop.is_set()

    async def _renew_loop(self, epoch: int) -> None:
        s = self.settings
        due = self._renewed_at + s.renew_interval_s
        while not self._lost.is_set():
            await asyncio.sleep(max(0.0, due - self._mono()))
            started = self._mono()
            deadline = self._renewed_at + s.fence_after_s
            if started >= deadline:
                self._lose("lease_expired", "no good renew in time by this instance's clock")
                return
            try:
                ok = await asyncio.wait_for(self._leases.renew(self.holder, epoch, s.lease_ttl_s),
                                            timeout=deadline - started)
            except TimeoutError:
                self._lose("renew_timeout", "no renew answer before the fence deadline")
                return
            except errors.TuningdError as exc:
                # The last good renew still counts: try again soon, until the fence deadline.
                log.warning("leader.renew_failed", error=exc.message, epoch=epoch)
                due = min(self._mono() + s.renew_interval_s * _RETRY_SHARE, deadline)
                continue
            if not ok:
                self._lose("renew_refused", "the store gave the lease to another instance")
                return
            self._renewed_at = started
            due = started + s.renew_interval_s

    async def _feed_listening(self) -> None:
        """Wait until the change feed surely hears the next write, where a store says so
        (PostgreSQL's LISTEN connection); give up, and the lease with it, at the fence."""
        await asyncio.wait_for(self._feed.listening(), timeout=self.settings.fence_after_s)

    @staticmethod
    async def _pump(feed: AsyncIterator[str], heard: asyncio.Queue[str]) -> None:
        async for job_id in feed:
            heard.put_nowait(job_id)

    async def _consume(self, heard: asyncio.Queue[str], engine: Engine) -> None:
        """Creates and cancel intents of other instances, into the engine's working set."""
        while True:
            job_id = await heard.get()
            try:
                if job_id == FEED_GAP:
                    await engine.absorb_all()
                else:
                    await engine.absorb(job_id)
            except Fenced:
                return
            except Exception as exc:  # one bad row or a store error must not stop the feed
                log.warning("feed.absorb_failed", job_id=job_id, error=repr(exc))

    # ------------------------------------------------------------------ losing the lease

    def _on_fenced(self, exc: Fenced) -> None:
        log.error("leader.fenced", instance_id=self.holder, epoch=exc.epoch,
                  current_epoch=exc.current)
        self._lose("fenced", exc.message)

    def _lose(self, reason: str, detail: str) -> None:
        """Stop acting now: no further action starts, every call in flight is abandoned."""
        if self._lost.is_set():
            return
        self._lost.set()
        engine = self._candidate
        if engine is not None:
            engine.halt()
        self.engine = None
        self._set_role(Role.STANDBY)
        log.warning("leader.lost", instance_id=self.holder, epoch=self.epoch, reason=reason,
                    detail=detail)

    def _set_role(self, role: str) -> None:
        if role == self.role:
            return
        self.role = role
        (self.became_leader if role == Role.LEADER else self.stepped_down).set()
        (self.stepped_down if role == Role.LEADER else self.became_leader).clear()
        if self._metrics is not None:
            self._metrics.set_leader(role == Role.LEADER)

    # ------------------------------------------------------------------ JobService

    def _active(self) -> JobService:
        engine = self.engine
        return engine if engine is not None and engine.ready() else self._standby

    async def submit(self, project: str, location: str, spec: Mapping[str, Any], *,
                     priority: int = 0, request_id: str | None = None,
                     api_version: str | None = None) -> tuple[Job, bool]:
        if self.draining:
            raise errors.Unavailable("tuningd is shutting down; retry against the next instance.")
        try:
            return await self._active().submit(project, location, spec, priority=priority,
                                               request_id=request_id, api_version=api_version)
        except Fenced:
            # This instance just learnt it is not the leader: the create is a standby's.
            return await self._standby.submit(project, location, spec, priority=priority,
                                              request_id=request_id, api_version=api_version)

    async def get(self, job_id: str) -> Job | None:
        return await self._active().get(job_id)

    async def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        return await self._active().ids_with_prefix(prefix, limit)

    async def history(self, job_id: str) -> list[JobEvent]:
        return await self._active().history(job_id)

    async def list_jobs(self, project: str | None, location: str | None, *,
                        predicate: JobPredicate | None,
                        page_size: int, after_key: str | None,
                        states: frozenset[LocalState] | None = None,
                        labels: Mapping[str, str] | None = None) -> Page:
        return await self._active().list_jobs(project, location, predicate=predicate,
                                              page_size=page_size, after_key=after_key,
                                              states=states, labels=labels)

    async def cancel(self, job_id: str) -> Job:
        try:
            return await self._active().cancel(job_id)
        except Fenced:
            return await self._standby.cancel(job_id)

    def queue_position(self, job: Job) -> int | None:
        return self._active().queue_position(job)

    def pause_for(self, job: Job) -> recovery.Pause | None:
        return self._active().pause_for(job)

    def paused_places(self) -> dict[planner.Place, recovery.Pause]:
        return self._active().paused_places()

    def spend_request(self, location: str) -> float:
        return self._active().spend_request(location)

    def ready(self) -> bool:
        """Ready as leader or as standby (every instance serves the whole API)."""
        return not self.draining and (self._standby.ready() or self._active().ready())

    def state_counts(self) -> dict[LocalState, int]:
        return self._active().state_counts()

    async def overview(self) -> Overview:
        """The engine's overview while leading (role leader), else the standby's."""
        engine = self.engine
        if engine is not None and engine.ready():
            return dataclasses.replace(await engine.overview(), role=InstanceRole.LEADER)
        return await self._standby.overview()
