"""A clock-driven harness for Engine tests with real parts: a store, emulator, client, metrics.

The store is SQLite unless a test asks for the in-memory one (store="memory").
Time moves only when a test says so: `tick(s)` advances the one ManualClock that the emulator
and the engine share, then runs `engine.step()` until a round starts no action. No sleeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from tuningd.adapters.google_auth import AnonymousTokenSource
from tuningd.adapters.memory import MemoryStore
from tuningd.adapters.metrics import Metrics, build_registry
from tuningd.adapters.sqlite.store import Store
from tuningd.adapters.vertex_http import VertexClient
from tuningd.config import PollingSettings, SchedulingSettings
from tuningd.core import limits, recovery
from tuningd.core.model import (
    ACTIVE_STATES,
    LABEL_JOB_ID,
    LABEL_MANAGED,
    MANAGED_VALUE,
    Job,
    LocalState,
)
from tuningd.emulator import Emulator, EmulatorConfig, Faults, ManualClock
from tuningd.emulator.state import EmulatedJob
from tuningd.ports import JobStore
from tuningd.service.engine import Engine, EngineSettings

PROJECT = "my-proj"
LOCATION = "us-central1"
FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"


def spec(base_model: str = FLASH, name: str = "sentiment") -> dict[str, Any]:
    """A valid canonical TuningJob create body (without tuningd's labels)."""
    return {
        "baseModel": base_model,
        "tunedModelDisplayName": name,
        "supervisedTuningSpec": {
            "trainingDatasetUri": "gs://my-bucket/sft/train.jsonl",
            "hyperParameters": {"epochCount": 3, "adapterSize": "ADAPTER_SIZE_FOUR"},
        },
    }


def settings(*, max_active: int = 2, per_location: Mapping[str, int] | None = None,
             per_base_model: Mapping[str, int] | None = None, initial_s: float = 5.0,
             max_interval_s: float = 300.0, jitter: float = 0.1, aging_s: float = 3600.0,
             batch_min_jobs: int = 2, request_timeout_s: float = 10.0, list_lag_s: float = 0.0,
             absent_confirmations: int = 2, confirm_spacing_s: float = 5.0,
             not_found_confirm_s: float = 5.0, sweep_interval_s: float = 300.0,
             cancel_unowned: bool = True) -> EngineSettings:
    """Engine settings with short, test-friendly polling and reconcile windows (a create is
    presumed absent 15 s after a failed attempt: 10 s timeout, then two lists 5 s apart)."""
    return EngineSettings(
        limits=limits.Limits(max_active=max_active, per_location=dict(per_location or {}),
                             per_base_model=dict(per_base_model or {})),
        polling=PollingSettings(initial_interval_s=initial_s,
                                       max_interval_s=max_interval_s, jitter=jitter,
                                       batch_min_jobs=batch_min_jobs),
        scheduling=SchedulingSettings(aging_interval_s=aging_s),
        reconcile=recovery.AbsenceRule(
            request_timeout_s=request_timeout_s, list_lag_s=list_lag_s,
            absent_confirmations=absent_confirmations, confirm_spacing_s=confirm_spacing_s,
            not_found_confirm_s=not_found_confirm_s),
        sweep_interval_s=sweep_interval_s, cancel_unowned=cancel_unowned,
    )


def emulator_config(**overrides: Any) -> EmulatorConfig:
    """Short lifecycles (5 s pending, 60 s running, 2 s cancelling), ample quota, fixed seed."""
    base = EmulatorConfig(pending_seconds=5, job_seconds=60, cancel_seconds=2, max_concurrent=10,
                          seed=3)
    return dataclasses.replace(base, **overrides)


class Harness:
    """One engine wired to real adapters on a shared manual clock."""

    def __init__(self, db_path: Path, emulator_config: EmulatorConfig,
                 engine_settings: EngineSettings, *, seed: int = 7,
                 api_version: str = "v1", store: str = "sqlite") -> None:
        self.db_path = db_path
        self.store_kind = store
        self.store: JobStore
        self.settings = engine_settings
        self.seed = seed
        self.api_version = api_version
        self.clock = ManualClock()
        self.emulator = Emulator(emulator_config, clock=self.clock)
        # Highest number of active jobs seen per limit scope, sampled after every round.
        self.peak_active: Counter[limits.Scope] = Counter()
        # Every structlog event of the run (set by open_harness).
        self.logs: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ wiring

    async def start(self) -> None:
        await self.emulator.start()
        self.session = aiohttp.ClientSession()
        self.vertex = VertexClient(self.session, AnonymousTokenSource(),
                                   endpoint=self.emulator.url, api_version=self.api_version)
        await self._open_engine()

    async def _open_engine(self) -> None:
        if self.store_kind == "memory":
            # A restart keeps the memory store: its contents play the database that outlived
            # the daemon (as a shared PostgreSQL would).
            if not hasattr(self, "store"):
                self.store = await MemoryStore.open()
        else:
            self.store = await Store.open(self.db_path)
        self.registry = build_registry()
        self.metrics = Metrics(self.registry)
        self.engine = Engine(self.store, self.vertex, self.settings, metrics=self.metrics,
                             clock=self.clock.now, rng=random.Random(self.seed))
        await self.engine.start()

    async def crash_and_restart(self) -> None:
        """Lose the engine as a kill -9 would (only the store's lock and file are released),
        then start a fresh engine, with fresh metrics, on the same database."""
        if self.store_kind != "memory":
            await self.store.close()
        await self._open_engine()

    async def close(self) -> None:
        await self.store.close()
        await self.session.close()
        await self.emulator.stop()

    # ------------------------------------------------------------------ driving time

    async def submit(self, priority: int = 0, *, base_model: str = FLASH,
                     location: str = LOCATION, request_id: str | None = None) -> Job:
        job, _ = await self.engine.submit(PROJECT, location, spec(base_model),
                                          priority=priority, request_id=request_id)
        return job

    async def settle(self, max_rounds: int = 100) -> int:
        """Run planning rounds until one starts nothing; the number of actions started."""
        total = 0
        for _ in range(max_rounds):
            started = await self.engine.step()
            if not started:
                return total
            await self._sample_active()  # a job becomes active only through an action
            total += started
        raise AssertionError(f"the engine still starts actions after {max_rounds} rounds")

    async def tick(self, seconds: float) -> int:
        """Advance the shared clock (and the emulator's lifecycle), then settle."""
        self.emulator.advance(seconds)
        return await self.settle()

    async def run(self, seconds: float, every: float = 1.0) -> None:
        """`seconds` of simulated time in steps of `every`, settling after each."""
        elapsed = 0.0
        while elapsed < seconds - 1e-9:
            step = min(every, seconds - elapsed)
            await self.tick(step)
            elapsed += step

    async def run_until(self, done: Callable[[], Awaitable[bool]], *, every: float = 1.0,
                        limit_s: float = 3600.0) -> float:
        """Tick until `await done()` holds; the simulated seconds it took."""
        elapsed = 0.0
        while not await done():
            if elapsed >= limit_s:
                raise AssertionError(f"condition not reached within {limit_s} s")
            await self.tick(every)
            elapsed += every
        return elapsed

    async def run_until_ended(self, *job_ids: str, every: float = 1.0,
                              limit_s: float = 3600.0) -> float:
        """Tick until every given job (default: every job) is terminal."""
        async def done() -> bool:
            if not job_ids:
                working = self.engine.state_counts()
                return not any(working[s] for s in LocalState if not s.is_terminal)
            return all(state.is_terminal for state in await self.states(*job_ids))
        return await self.run_until(done, every=every, limit_s=limit_s)

    async def _sample_active(self) -> None:
        jobs = await self.store.active_and_queued()
        for scope, n in limits.active_counts(jobs).items():
            self.peak_active[scope] = max(self.peak_active[scope], n)

    # ------------------------------------------------------------------ looking

    async def job(self, job_id: str) -> Job:
        """The job as stored (the truth that survives a restart)."""
        job = await self.store.get(job_id)
        assert job is not None, job_id
        return job

    async def states(self, *job_ids: str) -> list[LocalState]:
        return [(await self.job(i)).state for i in job_ids]

    async def history(self, job_id: str) -> list[str]:
        return [e.reason for e in await self.store.history(job_id)]

    def remote_jobs(self) -> list[EmulatedJob]:
        """Every job the emulator holds, in creation order."""
        return sorted(self.emulator.state.jobs.values(), key=lambda j: j.seq)

    def remote_for(self, job_id: str) -> list[EmulatedJob]:
        """The remote jobs carrying this local job's label."""
        return [j for j in self.remote_jobs()
                if (j.spec.get("labels") or {}).get(LABEL_JOB_ID) == job_id]

    def created_order(self) -> list[str]:
        """Local ids in the order their remote jobs were created."""
        return [str((j.spec.get("labels") or {}).get(LABEL_JOB_ID)) for j in self.remote_jobs()]

    def requests(self, method: str, outcome: str | None = None) -> int:
        """Requests the emulator saw for a method (optionally only one outcome, e.g. "200")."""
        counts = self.emulator.state.request_counts.get(method, Counter())
        return counts[outcome] if outcome is not None else sum(counts.values())

    def reads(self) -> dict[str, int]:
        return {"get": self.requests("get"), "list": self.requests("list")}

    def events(self, name: str) -> list[dict[str, Any]]:
        """The logged events called `name`, in order."""
        return [e for e in self.logs if e.get("event") == name]

    def plant_remote(self, label_job_id: str | None, *, location: str = LOCATION,
                     labels: Mapping[str, str] | None = None) -> EmulatedJob:
        """A remote job tuningd did not create in this run (a late landing, a duplicate, a job of
        a lost database), labelled as tuningd labels its jobs (or with `labels`: e.g. the
        managed-by=tuningd of tuningd before issue 8) and, if given, with a tuningd-job-id."""
        labels = dict(labels if labels is not None else {LABEL_MANAGED: MANAGED_VALUE})
        if label_job_id is not None:
            labels[LABEL_JOB_ID] = label_job_id
        return self.emulator.state.create({**spec(), "labels": labels}, api_version="v1",
                                          project=PROJECT, location=location)

    def set_faults(self, **faults: Any) -> None:
        self.emulator.state.faults = Faults(**faults)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    @staticmethod
    def active(jobs: list[Job]) -> int:
        return sum(1 for j in jobs if j.state in ACTIVE_STATES)


@contextlib.asynccontextmanager
async def open_harness(tmp_path: Path, *, emulator: EmulatorConfig | None = None,
                       engine: EngineSettings | None = None, seed: int = 7,
                       api_version: str = "v1", store: str = "sqlite",
                       expect_unowned: bool = False) -> AsyncIterator[Harness]:
    """A started harness; on exit it closes everything and fails if an engine action crashed,
    or (unless `expect_unowned`) if a duplicate or unowned remote job was reported."""
    config = emulator or emulator_config()
    tmp_path.mkdir(parents=True, exist_ok=True)
    h = Harness(tmp_path / "tuningd.db", config, engine or settings(), seed=seed,
                api_version=api_version, store=store)
    with capture_logs() as logs:
        h.logs = logs
        await h.start()
        try:
            yield h
        finally:
            await h.close()
    crashed = [e for e in logs if e.get("event") == "engine.action_failed"]
    assert not crashed, f"engine actions crashed: {crashed}"
    duplicates = [e for e in logs if e.get("event") in ("job.duplicate_remote",
                                                        "sweep.unowned_remote_job")]
    assert expect_unowned or not duplicates, f"duplicate or unowned remote jobs: {duplicates}"
