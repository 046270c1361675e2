"""Retention on a real SQLite store: ended jobs past the retention go in small batches, the rest
stays, and the store's size and the deletions are metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from tests.integration.store_jobs import make_job
from tuningd.adapters.metrics import Metrics, build_registry
from tuningd.adapters.sqlite.store import Store
from tuningd.core.model import LocalState
from tuningd.service.retention import Retention

DAY_S = 86_400.0
NOW = 1_800_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "tuningd.db")
    yield s
    await s.close()


async def test_a_pass_deletes_the_backlog_in_batches_and_keeps_the_rest(store: Store) -> None:
    """Jobs ended more than retention_days ago go, in transactions of at most batch_jobs;
    jobs ended since and unended jobs stay; deletions and the store size are published."""
    old = [make_job(n, state=LocalState.SUCCEEDED, ended_at=NOW - 100 * DAY_S + n)
           for n in range(1, 26)]
    recent = make_job(100, state=LocalState.FAILED, ended_at=NOW - DAY_S)
    running = make_job(101, state=LocalState.RUNNING)
    for job in (*old, recent, running):
        await store.create_or_get(job)
    registry = build_registry()
    metrics = Metrics(registry)
    commits = store.commits
    retention = Retention(store, retention_s=90 * DAY_S, metrics=metrics, batch_jobs=10,
                          clock=lambda: NOW)

    assert await retention.run_once() == 25
    assert store.commits - commits == 3  # 10 + 10 + 5
    left = {j.id for j in await store.list_jobs(limit=100)}
    assert left == {recent.id, running.id}
    assert registry.get_sample_value("tuningd_jobs_pruned_total") == 25
    size = registry.get_sample_value("tuningd_store_size_bytes")
    assert size is not None and size > 0
    assert await retention.run_once() == 0


async def test_zero_retention_keeps_everything(store: Store) -> None:
    """retention_days 0 deletes nothing, however old, and still publishes the size."""
    await store.create_or_get(make_job(1, state=LocalState.SUCCEEDED, ended_at=1.0))
    registry = build_registry()
    retention = Retention(store, retention_s=0, metrics=Metrics(registry), clock=lambda: NOW)
    assert await retention.run_once() == 0
    assert await store.get(make_job(1).id) is not None
    assert (registry.get_sample_value("tuningd_store_size_bytes") or 0) > 0


async def test_run_makes_a_pass_then_waits_for_stop(store: Store) -> None:
    """run() makes a pass at once and returns as soon as it is stopped."""
    await store.create_or_get(make_job(1, state=LocalState.SUCCEEDED, ended_at=1.0))
    stop = asyncio.Event()
    retention = Retention(store, retention_s=DAY_S, clock=lambda: NOW, interval_s=3600)
    task = asyncio.create_task(retention.run(stop))
    while await store.get(make_job(1).id) is not None:
        await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_failing_store_is_logged_and_the_loop_goes_on(store: Store) -> None:
    """A pass the store refuses is one warning, not the end of the retention loop."""
    await store.close()
    stop = asyncio.Event()
    retention = Retention(store, retention_s=DAY_S, clock=lambda: NOW, interval_s=3600)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(retention.run(stop))
        while not any(e["event"] == "retention.failed" for e in logs):
            await asyncio.sleep(0)
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, 5)
