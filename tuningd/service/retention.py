"""Retention: ended jobs past store.retention_days deleted in small batches, off the hot path."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from tuningd.adapters.metrics import Metrics
from tuningd.core import errors
from tuningd.ports import JobStore

log = structlog.get_logger("tuningd.retention")

__all__ = ["BATCH_JOBS", "INTERVAL_S", "Retention"]

# One transaction deletes at most this many jobs (with their events), so the writer is never
# held for long and creates and polls interleave with a large backlog's deletion.
BATCH_JOBS = 500
# A pass an hour: ended jobs age by days, so nothing is gained by looking more often.
INTERVAL_S = 3600.0


class Retention:
    """Deletes ended jobs (and their history) that ended more than `retention_s` ago.

    `retention_s` 0 keeps everything; the store's size is still published."""

    def __init__(self, store: JobStore, *, retention_s: float, metrics: Metrics | None = None,
                 interval_s: float = INTERVAL_S, batch_jobs: int = BATCH_JOBS,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.retention_s = retention_s
        self._metrics = metrics
        self._interval_s = interval_s
        self._batch_jobs = batch_jobs
        self._clock = clock

    async def run_once(self) -> int:
        """One pass: batches until the backlog is gone; the number of jobs deleted."""
        deleted = 0
        if self.retention_s > 0:
            cutoff = self._clock() - self.retention_s
            while True:
                batch = await self._store.prune_ended(cutoff, self._batch_jobs)
                deleted += batch
                if self._metrics is not None and batch:
                    self._metrics.count_pruned(batch)
                if batch < self._batch_jobs:
                    break
                await asyncio.sleep(0)  # let the loop's own writes in between batches
            if deleted:
                log.info("retention.pruned", jobs=deleted, ended_before=cutoff)
        size = await self._store.size_bytes()
        if self._metrics is not None and size is not None:
            self._metrics.set_store_size(size)
        return deleted

    async def run(self, stop: asyncio.Event) -> None:
        """Passes every interval until `stop`; a store failure is logged and retried next time."""
        while not stop.is_set():
            try:
                await self.run_once()
            except errors.StoreError as exc:
                log.warning("retention.failed", error=exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
