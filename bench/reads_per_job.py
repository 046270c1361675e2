"""Vertex reads per job: the real engine against the emulator, both on one manual clock.

The engine is driven with `Engine.step()` and the clock jumps straight to the engine's next due
time, so hours of simulated jobs run in seconds and the result is deterministic for a seed.
Every Vertex call goes over real HTTP (loopback) to the in-process emulator, which counts them.

Baseline: a naive client that GETs every remote job every `initial_interval_s` from its create
until it sees it ended, i.e. ceil((end - create) / initial) reads per job, computed from the
emulator's own create and end times of the same run.

    .venv/bin/python bench/reads_per_job.py [--jobs 20] [--seed 1] [--out reads.json]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, percentile, table, write_json

from tuningd.adapters.google_auth import AnonymousTokenSource
from tuningd.adapters.log import configure_logging
from tuningd.adapters.sqlite.store import Store
from tuningd.adapters.vertex_http import VertexClient
from tuningd.config import PollingSettings
from tuningd.core import limits
from tuningd.core.model import LABEL_JOB_ID, LocalState
from tuningd.emulator.config import EmulatorConfig, ManualClock
from tuningd.emulator.server import Emulator, make_app
from tuningd.emulator.state import (
    EmulatedJob,
    EmulatorState,
)
from tuningd.service.engine import Engine, EngineSettings
from tuningd.vertex import wire

PROJECT = "bench-proj"
LOCATION = "us-central1"
BODY = {
    "baseModel": "gemini-2.5-flash",
    "supervisedTuningSpec": {"trainingDatasetUri": "gs://bench-bucket/train.jsonl"},
}


class VariedDurations(EmulatorState):
    """The emulator with a pending time and a run time of its own for each job (by create order).

    Same phase fractions as EmulatorState._next_event; only the two durations vary per job."""

    def __init__(self, config: EmulatorConfig, clock: ManualClock,
                 durations: list[tuple[float, float]]) -> None:
        self._durations = durations
        super().__init__(config, clock)

    def phase_seconds(self, job: EmulatedJob) -> tuple[float, float]:
        return self._durations[(job.seq - 1) % len(self._durations)]


@dataclass(frozen=True)
class Scenario:
    name: str
    polling: PollingSettings
    note: str


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    base = PollingSettings(initial_interval_s=args.initial, max_interval_s=args.max,
                           multiplier=args.multiplier)
    out = [Scenario("default (batch list)", base,
                    "shipped defaults: one filtered list per location when >= 2 jobs are due")]
    out.append(Scenario("get only", _replace(base, batch_min_jobs=10**9),
                        "batch listing off: one GET per due job"))
    if args.coalesce is not None:
        out.append(Scenario(f"coalesce {args.coalesce:g}s",
                            _replace(base, batch_coalesce_s=args.coalesce),
                            "batch list refreshes jobs due within the window"))
    if args.pending_max is not None:
        out.append(Scenario(f"pending cap {args.pending_max:g}s",
                            _replace(base, pending_max_interval_s=args.pending_max),
                            "pending jobs polled at most this far apart"))
    return out


def _replace(settings: PollingSettings, **changes: Any) -> PollingSettings:
    import dataclasses
    return dataclasses.replace(settings, **changes)


async def run_scenario(scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    durations = [(rng.uniform(args.pending_min * 60, args.pending_max_s * 60),
                  rng.uniform(args.run_min * 60, args.run_max * 60)) for _ in range(args.jobs)]
    clock = ManualClock()
    config = EmulatorConfig(max_concurrent=args.quota, seed=args.seed,
                            strict_unknown_fields=False)
    emu = Emulator(config, clock=clock)
    emu.state = VariedDurations(config, clock, durations)
    emu.app = make_app(emu.state)
    await emu.start()
    tmp = tempfile.TemporaryDirectory(prefix="tuningd-bench-")
    store = await Store.open(Path(tmp.name) / "bench.db")
    session = aiohttp.ClientSession()
    try:
        vertex = VertexClient(session, AnonymousTokenSource(), endpoint=emu.url)
        settings = EngineSettings(limits=limits.Limits(max_active=args.max_active),
                                  polling=scenario.polling)
        engine = Engine(store, vertex, settings, clock=clock.now,
                        rng=random.Random(args.seed + 1))
        await engine.start()
        spec = wire.strip_output_only(wire.parse_tuning_job(BODY))
        wire.validate_create(spec)
        local_ids = []
        for i in range(args.jobs):
            job, _ = await engine.submit(PROJECT, LOCATION, {**spec,
                                                             "tunedModelDisplayName": f"j{i}"})
            local_ids.append(job.id)
        start_s = clock.now()
        steps = 0
        wall = time.perf_counter()
        limit_s = start_s + args.horizon_h * 3600
        while True:
            # Everything due at this instant, including work a finished action made due now
            # (a freed slot lets the next queued job submit at once).
            for _ in range(50):
                steps += 1
                if not await engine.step():
                    break
            active = await store.active_and_queued()
            if not active or clock.now() > limit_s:
                break
            now = clock.now()
            due = [j.next_action_at for j in active
                   if j.state is not LocalState.QUEUED and j.next_action_at > now]
            clock.advance(max(0.001, min(due, default=now + 1.0) - now))
            emu.state.advance()
        wall = time.perf_counter() - wall
        return await _measure(scenario, args, emu.state, store, local_ids, start_s, clock.now(),
                              steps, wall)
    finally:
        await session.close()
        await store.close()
        await emu.stop()
        tmp.cleanup()


async def _measure(scenario: Scenario, args: argparse.Namespace, state: EmulatorState,
                   store: Store, local_ids: list[str], start_s: float, end_s: float,
                   steps: int, wall: float) -> dict[str, Any]:
    counts = {m: sum(c.values()) for m, c in state.request_counts.items()}
    reads = counts.get("get", 0) + counts.get("list", 0)
    remote_by_local: dict[str, EmulatedJob] = {}
    for job in state.jobs.values():
        label = ((job.spec.get("labels") or {}).get(LABEL_JOB_ID)
                 or ((job.request_body or {}).get("labels") or {}).get(LABEL_JOB_ID))
        if label:
            remote_by_local[str(label)] = job
    baseline = 0
    lifetime_baseline = 0
    end_delays: list[float] = []
    start_delays: list[float] = []
    unfinished = 0
    for local_id in local_ids:
        remote = remote_by_local.get(local_id)
        if remote is None or remote.end_s is None:
            unfinished += 1
            continue
        baseline += math.ceil((remote.end_s - remote.create_s) / args.initial)
        events = await store.history(local_id)
        lifetime_baseline += math.ceil((remote.end_s - events[0].at) / args.initial)
        ended = [e.at for e in events if e.to_state.is_terminal]
        if ended:
            end_delays.append(ended[0] - remote.end_s)
        ran = [e.at for e in events if e.to_state is LocalState.RUNNING]
        if ran and remote.start_s is not None:
            start_delays.append(ran[0] - remote.start_s)
    done = len(local_ids) - unfinished
    return {
        "scenario": scenario.name,
        "note": scenario.note,
        "jobs": len(local_ids),
        "jobs_finished": done,
        "simulated_hours": (end_s - start_s) / 3600.0,
        "requests": counts,
        "reads": reads,
        "reads_per_job": reads / max(done, 1),
        "baseline_reads": baseline,
        "baseline_reads_per_job": baseline / max(done, 1),
        "ratio": baseline / reads if reads else math.inf,
        # A client without tuningd submits at once and polls from then on (its jobs wait in
        # Vertex's quota queue instead of ours): the same jobs, from acceptance to end.
        "lifetime_baseline_reads_per_job": lifetime_baseline / max(done, 1),
        "lifetime_ratio": lifetime_baseline / reads if reads else math.inf,
        "end_detection_delay_s": {"p50": percentile(end_delays, 50),
                                  "p90": percentile(end_delays, 90),
                                  "max": max(end_delays, default=math.nan)},
        "start_detection_delay_s": {"p50": percentile(start_delays, 50),
                                    "max": max(start_delays, default=math.nan)},
        "naive_end_detection_delay_s": {"p50": args.initial / 2, "max": args.initial},
        "engine_steps": steps,
        "wall_s": wall,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--quota", type=int, default=2, help="emulator concurrent-job quota")
    p.add_argument("--max-active", type=int, default=2, help="daemon limits.max_active")
    p.add_argument("--run-min", type=float, default=30.0, help="shortest run, minutes")
    p.add_argument("--run-max", type=float, default=90.0, help="longest run, minutes")
    p.add_argument("--pending-min", type=float, default=1.0, help="shortest pending, minutes")
    p.add_argument("--pending-max-s", type=float, default=5.0, dest="pending_max_s",
                   metavar="MINUTES", help="longest pending, minutes")
    p.add_argument("--initial", type=float, default=30.0, help="polling.initial_interval_s")
    p.add_argument("--max", type=float, default=300.0, help="polling.max_interval_s")
    p.add_argument("--multiplier", type=float, default=2.0, help="polling.multiplier")
    p.add_argument("--coalesce", type=float, default=None,
                   help="also run a scenario with batch_coalesce_s = this (0: every job)")
    p.add_argument("--pending-max", type=float, default=None,
                   help="also run a scenario with pending_max_interval_s = this")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--horizon-h", type=float, default=200.0, help="give up after this many "
                   "simulated hours")
    p.add_argument("--out", default=None, help="write JSON results here ('-' = stdout)")
    return p.parse_args(argv)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = [await run_scenario(s, args) for s in scenarios(args)]
    return {"benchmark": "reads_per_job", "machine": machine_info(),
            "workload": {"jobs": args.jobs, "emulator_quota": args.quota,
                         "max_active": args.max_active,
                         "run_minutes": [args.run_min, args.run_max],
                         "pending_minutes": [args.pending_min, args.pending_max_s],
                         "polling": {"initial_s": args.initial, "max_s": args.max,
                                     "multiplier": args.multiplier},
                         "seed": args.seed},
            "scenarios": results}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("error", "json")
    logging.getLogger().setLevel(logging.ERROR)
    result = asyncio.run(main_async(args))
    rows = []
    for r in result["scenarios"]:
        rows.append([r["scenario"], r["jobs_finished"], r["reads"], r["reads_per_job"],
                     r["baseline_reads_per_job"], r["ratio"], r["lifetime_ratio"],
                     r["end_detection_delay_s"]["p50"], r["end_detection_delay_s"]["max"],
                     r["start_detection_delay_s"]["p50"], r["simulated_hours"], r["wall_s"]])
    w = result["workload"]
    print(f"{w['jobs']} jobs, emulator quota {w['emulator_quota']}, max_active "
          f"{w['max_active']}, runs {w['run_minutes'][0]:g}-{w['run_minutes'][1]:g} min, "
          f"pending {w['pending_minutes'][0]:g}-{w['pending_minutes'][1]:g} min, polling "
          f"{args.initial:g}s..{args.max:g}s x{args.multiplier:g}, seed {args.seed}")
    print(table(["scenario", "done", "reads", "reads/job", "naive/job", "ratio", "ratio*",
                 "end p50 s", "end max s", "start p50 s", "sim h", "wall s"], rows))
    print("naive/job, ratio: GET every initial interval while the job exists on Vertex "
          "(create..end); ratio*: from acceptance..end (a client without tuningd submits at once)")
    for r in result["scenarios"]:
        print(f"  {r['scenario']}: requests {r['requests']}")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
