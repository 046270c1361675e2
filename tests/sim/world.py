"""The simulated world: real engine, store, client and emulator on one manual clock, plus crashes.

Private engine/store attributes used here (no public hook exists yet; see the sim's README):
`Engine._iterate` (one planning round without awaiting its actions), `Engine._tasks` (the actions
in flight, to gate and to kill), `Store._pending` (group-commit writes not yet handed to SQLite,
dropped on a crash as kill -9 would); and the emulator's `EmulatorState._live` (its jobs that
have not ended, so per-step checks need not scan every job ever made).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import aiohttp

from tests.sim.faults import CLEAR, Regime
from tests.sim.gate import Gate
from tests.sim.options import LOCATIONS, PROJECTS, SimOptions, WorldParams
from tuningd.adapters.google_auth import AnonymousTokenSource
from tuningd.adapters.metrics import Metrics, build_registry
from tuningd.adapters.sqlite.store import Store
from tuningd.adapters.vertex_http import VertexClient
from tuningd.config import PollingSettings, RetrySettings
from tuningd.core import limits, recovery
from tuningd.core.model import Job, LocalState
from tuningd.emulator import Emulator, EmulatorConfig, ManualClock, QuotaMode, make_app
from tuningd.emulator.state import EmulatedJob, EmulatorState
from tuningd.service.engine import Engine, EngineSettings

GOOD_DATASET = "gs://sim-bucket/train.jsonl"
BAD_DATASET = "gs://sim-bucket/missing.jsonl"


class ObservedStore(Store):
    """The real store, telling the sim about every row it has durably written."""

    observer: Callable[[Job], None] | None = None

    async def create_or_get(self, job: Job, *args: Any, **kwargs: Any) -> tuple[Job, bool]:
        stored, created = await super().create_or_get(job, *args, **kwargs)
        if created and self.observer is not None:
            self.observer(stored)
        return stored, created

    async def apply(self, before: Job, after: Job, *args: Any, **kwargs: Any) -> None:
        await super().apply(before, after, *args, **kwargs)
        if self.observer is not None:
            self.observer(after)

    async def update_job(self, job: Job, *args: Any, **kwargs: Any) -> None:
        await super().update_job(job, *args, **kwargs)
        if self.observer is not None:
            self.observer(job)


class SimEmulatorState(EmulatorState):
    """The emulator with a pending and a run time of its own for each job (drawn from the seed
    and the job's creation order); jobs created once `hurry` is set (the quiesce phase, where
    nothing is left to explore but the end) run ten times faster, so fewer polls are spent."""

    def __init__(self, config: EmulatorConfig, clock: ManualClock, seed: int) -> None:
        self._seed = seed
        self._durations: dict[int, tuple[float, float]] = {}
        self.hurry = False
        super().__init__(config, clock)

    def phase_seconds(self, job: EmulatedJob) -> tuple[float, float]:
        known = self._durations.get(job.seq)
        if known is None:
            rng = random.Random(f"durations-{self._seed}-{job.seq}")
            scale = 0.1 if self.hurry else 1.0
            known = (scale * self.config.pending_seconds * rng.uniform(0.5, 1.5),
                     scale * self.config.job_seconds * rng.uniform(0.5, 1.5))
            self._durations[job.seq] = known
        return known


def _scratch_dir() -> str:
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix="tuningd-sim-", dir=base)


def spec(base_model: str, dataset: str, name: str) -> dict[str, Any]:
    return {
        "baseModel": base_model,
        "tunedModelDisplayName": name,
        "supervisedTuningSpec": {
            "trainingDatasetUri": dataset,
            "hyperParameters": {"epochCount": 2, "adapterSize": "ADAPTER_SIZE_FOUR"},
        },
    }


class World:
    """One seed's world. The engine can be killed and restarted; everything else lives on."""

    def __init__(self, seed: int, options: SimOptions, params: WorldParams) -> None:
        self.seed = seed
        self.options = options
        self.params = params
        self.clock = ManualClock()
        self.start_s = self.clock.now()
        self.offset_s = 0.0  # engine clock = emulator clock + offset (NTP steps)
        self.awake_s = 0.0  # simulated time in which the daemon's loop ran on time
        self.incarnation = 0
        self.regime: Regime = CLEAR
        self.settings = EngineSettings(
            limits=limits.Limits(max_active=params.max_active,
                                 per_location=dict(params.per_location),
                                 per_base_model=dict(params.per_base_model)),
            polling=PollingSettings(initial_interval_s=params.initial_interval_s,
                                           max_interval_s=params.max_interval_s),
            retry=RetrySettings(cap_s=params.retry_cap_s),
            # The daemon's assumptions are the sim's fault bounds (options.py).
            reconcile=recovery.AbsenceRule(request_timeout_s=options.request_timeout_s,
                                                 list_lag_s=options.list_lag_s),
            # As a daemon with both allow-lists set: every place is swept.
            sweep_places=tuple((p, loc) for p in PROJECTS for loc in LOCATIONS),
            sweep_interval_s=params.sweep_interval_s,
            # The sim runs rounds itself; the loop's sleep cap only shapes _iterate's answer.
            tick_s=3600.0,
        )
        self._next_local = 0
        # Latest durably written row of every job (kept by ObservedStore, rebuilt on restart),
        # the number of jobs per state, and the ids changed since the checker last looked.
        self.local: dict[str, Job] = {}
        self.local_counts: Counter[LocalState] = Counter()
        self.dirty: set[str] = set()
        self.events: list[dict[str, Any]] = []  # warnings/errors the engine logged
        self.dir = _scratch_dir()
        self.db_path = str(Path(self.dir) / "tuningd.db")
        self.gate = Gate(self.now, options.request_timeout_s)

    def now(self) -> float:
        return self.clock.now()

    def elapsed(self) -> float:
        return self.clock.now() - self.start_s

    def new_id(self) -> str:
        # Shared by every incarnation: a killed daemon's ids are never handed out again.
        self._next_local += 1
        return f"j{self._next_local:04d}"

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        root = Path(self.dir) / "gcs"
        (root / "sim-bucket").mkdir(parents=True)
        example = {"contents": [{"role": "user", "parts": [{"text": "q"}]},
                                {"role": "model", "parts": [{"text": "a"}]}]}
        lines = [json.dumps(example)] * 20
        (root / "sim-bucket" / "train.jsonl").write_text("\n".join(lines), encoding="utf-8")
        p = self.params
        config = EmulatorConfig(
            pending_seconds=p.pending_s, job_seconds=p.job_s, cancel_seconds=p.cancel_s,
            cancel_completes_probability=p.cancel_completes_probability,
            max_concurrent=p.quota,
            quota_mode=QuotaMode.REJECT if p.quota_reject else QuotaMode.WAIT,
            seed=self.seed, gcs_root=root)
        self.emulator = Emulator(config, clock=self.clock)
        self.durations = SimEmulatorState(config, self.clock, self.seed)
        self.emulator.state = self.durations
        self.emulator.app = make_app(self.durations)
        await self.emulator.start()
        self.session = aiohttp.ClientSession(trace_configs=[self.gate.trace_config()])
        # The real timeout never fires (a seed runs in well under a second of wall time); the
        # gate times requests out in simulated time instead.
        self.vertex = VertexClient(self.session, AnonymousTokenSource(),
                                   endpoint=self.emulator.url, timeout_s=1e6)
        await self._start_engine()

    async def _start_engine(self) -> None:
        self.store = cast(ObservedStore, await ObservedStore.open(self.db_path))
        self.local = {j.id: j for j in await self.store.list_jobs(limit=1_000_000)}
        self.local_counts = Counter(j.state for j in self.local.values())
        self.dirty = set(self.local)
        self.store.observer = self._observe
        self.incarnation += 1
        # A new process has new metrics; they run as in the daemon (their code is engine code,
        # called on every commit). They draw no randomness: the trace is the same without them.
        metrics = Metrics(build_registry()) if self.options.metrics else None
        self.engine = Engine(
            self.store, self.vertex, self.settings, metrics=metrics, clock=self._engine_now,
            rng=random.Random(f"engine-{self.seed}-{self.incarnation}"), new_id=self.new_id)
        await self.engine.start()

    def _engine_now(self) -> float:
        return self.clock.now() + self.offset_s

    def _observe(self, job: Job) -> None:
        old = self.local.get(job.id)
        if old is not None:
            self.local_counts[old.state] -= 1
        self.local_counts[job.state] += 1
        self.local[job.id] = job
        self.dirty.add(job.id)

    def unfinished(self) -> int:
        """Local jobs not in a terminal state."""
        return sum(n for state, n in self.local_counts.items() if not state.is_terminal)

    def remote_live(self) -> list[EmulatedJob]:
        """Remote jobs not ended yet (the emulator keeps them apart, so this is cheap)."""
        return list(self.emulator.state._live.values())

    async def crash(self) -> None:
        """kill -9: every action dies where it waits, unsent writes are lost, nothing is
        flushed; then a new engine starts on the same database with the same client."""
        await self._kill()
        await self._start_engine()

    async def _kill(self) -> None:
        tasks = list(self.engine._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        store = self.store
        store.observer = None
        for _, future in store._pending:  # never reached SQLite: lost with the process
            future.cancel()
        store._pending.clear()
        await store.close()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._kill()
        await self.session.close()
        await self.emulator.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ moves

    def plan_round(self) -> int:
        """One planning round; its actions start (and are gated) but are not awaited."""
        before = set(self.engine._tasks)
        self.last_delay_s = self.engine._iterate()
        started = [t for t in self.engine._tasks if t not in before]
        for task in started:
            self.gate.track(task)
        return len(started)

    def advance(self, seconds: float, *, awake: bool = False) -> None:
        """Move the shared clock; `awake`: the daemon's loop ran on time meanwhile (not stalled),
        which is the time the engine had to notice things."""
        self.clock.advance(seconds)
        if awake:
            self.awake_s += seconds
        self.emulator.state.advance()

    def set_regime(self, regime: Regime) -> None:
        self.regime = regime
        self.emulator.state.faults = regime.faults

    def reload(self, limits: limits.Limits) -> None:
        self.settings = dataclasses.replace(self.settings, limits=limits)
        self.engine.reload(self.settings)
