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
import dataclasses
import json
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
from tuningd.app import engine_settings
from tuningd.config import LimitsSettings, PollingSettings, Settings
from tuningd.core.model import LABEL_JOB_ID, LocalState
from tuningd.emulator import dataset
from tuningd.emulator.config import EmulatorConfig, ManualClock
from tuningd.emulator.server import Emulator, make_app
from tuningd.emulator.state import (
    EmulatedJob,
    EmulatorState,
)
from tuningd.service.engine import Engine
from tuningd.vertex import wire

PROJECT = "bench-proj"
LOCATION = "us-central1"
BUCKET = "bench-bucket"
EPOCHS = 3
# One training example of every dataset: its size sets the job's billable tokens.
EXAMPLE = {"contents": [
    {"role": "user", "parts": [{"text": "Classify the sentiment of this review. " + "x" * 360}]},
    {"role": "model", "parts": [{"text": "positive " + "y" * 91}]}]}
REFERENCE_EXAMPLES = 500  # the dataset size that runs the reference minutes


class VariedPending(EmulatorState):
    """The emulator with a pending time of its own for each job (by create order); the run time
    is the emulator's own: billable tokens x seconds_per_million_tokens, +- run_spread."""

    def __init__(self, config: EmulatorConfig, clock: ManualClock,
                 pending_s: list[float]) -> None:
        self._pending_s = pending_s
        super().__init__(config, clock)

    def phase_seconds(self, job: EmulatedJob) -> tuple[float, float]:
        return self._pending_s[(job.seq - 1) % len(self._pending_s)], super().phase_seconds(job)[1]


@dataclass(frozen=True)
class Workload:
    name: str
    jobs: int
    quota: int  # the emulator's concurrent-job quota, and the daemon's limits.max_active
    run_min: tuple[float, float]  # run time range, minutes
    pending_min: tuple[float, float]
    baseline_s: float  # the naive client's GET interval
    polling: PollingSettings
    note: str


def workloads(args: argparse.Namespace) -> list[Workload]:
    shipped = PollingSettings()
    out = [
        Workload("a: shipped (quota 2, 20 jobs)", args.jobs, 2, (30.0, 90.0), (1.0, 5.0), 30.0,
                 shipped, "shipped settings; baseline a GET every 30 s per job"),
        Workload("b: 100 at once (1-3 h)", 100, 100, (60.0, 180.0), (1.0, 5.0), 60.0,
                 dataclasses.replace(shipped, max_interval_s=60.0),
                 "polling.max_interval_s = 60 (to see ends as fast as the baseline); baseline a "
                 "GET every 60 s per job"),
    ]
    if args.only:
        out = [w for w in out if w.name[0] in args.only]
    return out


def write_datasets(root: Path, runs_s: list[float], reference_s: float) -> list[str]:
    """One dataset per job, sized so that it runs its drawn minutes; their gs:// URIs."""
    line = json.dumps(EXAMPLE)
    uris = []
    for i, run_s in enumerate(runs_s):
        count = max(16, round(REFERENCE_EXAMPLES * run_s / reference_s))
        path = root / BUCKET / f"train-{i}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((line + "\n") * count)
        uris.append(f"gs://{BUCKET}/train-{i}.jsonl")
    return uris


def seconds_per_million_tokens(reference_s: float) -> float:
    """The emulator's rate that makes the reference dataset run `reference_s`."""
    chars = sum(len(p["text"]) for c in EXAMPLE["contents"] for p in c["parts"])
    tokens = dataset.estimate_tokens(chars * REFERENCE_EXAMPLES * EPOCHS)
    return reference_s / (tokens / 1e6)


async def run_workload(w: Workload, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    pending = [rng.uniform(w.pending_min[0] * 60, w.pending_min[1] * 60) for _ in range(w.jobs)]
    runs = [rng.uniform(w.run_min[0] * 60, w.run_min[1] * 60) for _ in range(w.jobs)]
    reference_s = 60.0 * (w.run_min[0] + w.run_min[1]) / 2
    tmp = tempfile.TemporaryDirectory(prefix="tuningd-bench-")
    uris = write_datasets(Path(tmp.name) / "gcs", runs, reference_s)
    clock = ManualClock()
    config = EmulatorConfig(max_concurrent=w.quota, seed=args.seed,
                            strict_unknown_fields=False, gcs_root=Path(tmp.name) / "gcs",
                            seconds_per_million_tokens=seconds_per_million_tokens(reference_s),
                            run_spread=args.run_spread)
    emu = Emulator(config, clock=clock)
    emu.state = VariedPending(config, clock, pending)
    emu.app = make_app(emu.state)
    await emu.start()
    store = await Store.open(Path(tmp.name) / "bench.db")
    session = aiohttp.ClientSession()
    try:
        vertex = VertexClient(session, AnonymousTokenSource(), endpoint=emu.url)
        settings = dataclasses.replace(
            engine_settings(dataclasses.replace(
                Settings(), polling=w.polling,
                limits=dataclasses.replace(LimitsSettings(), max_active=w.quota))),
            tick_s=1.0)
        engine = Engine(store, vertex, settings, clock=clock.now,
                        rng=random.Random(args.seed + 1))
        await engine.start()
        local_ids = []
        for i in range(w.jobs):
            body = {"baseModel": "gemini-2.5-flash", "tunedModelDisplayName": f"j{i}",
                    "supervisedTuningSpec": {"trainingDatasetUri": uris[i],
                                             "hyperParameters": {"epochCount": EPOCHS}}}
            spec = wire.strip_output_only(wire.parse_tuning_job(body))
            wire.validate_create(spec)
            job, _ = await engine.submit(PROJECT, LOCATION, spec)
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
            due.extend(t for t in engine._actions.sweep_at.values() if t > now)
            clock.advance(max(0.001, min(due, default=now + 1.0) - now))
            emu.state.advance()
        wall = time.perf_counter() - wall
        return await _measure(w, emu.state, store, local_ids, start_s, clock.now(), steps, wall)
    finally:
        await session.close()
        await store.close()
        await emu.stop()
        tmp.cleanup()


async def _measure(w: Workload, state: EmulatorState, store: Store, local_ids: list[str],
                   start_s: float, end_s: float, steps: int, wall: float) -> dict[str, Any]:
    counts = {m: sum(c.values()) for m, c in state.request_counts.items()}
    reads = counts.get("get", 0) + counts.get("list", 0)
    remote_by_local: dict[str, EmulatedJob] = {}
    for job in state.jobs.values():
        label = ((job.spec.get("labels") or {}).get(LABEL_JOB_ID)
                 or ((job.request_body or {}).get("labels") or {}).get(LABEL_JOB_ID))
        if label:
            remote_by_local[str(label)] = job
    baseline = 0
    end_delays: list[float] = []
    naive_delays: list[float] = []
    runs: list[float] = []
    unfinished = 0
    for local_id in local_ids:
        remote = remote_by_local.get(local_id)
        if remote is None or remote.end_s is None:
            unfinished += 1
            continue
        lived = remote.end_s - remote.create_s
        polls = math.ceil(lived / w.baseline_s)
        baseline += polls
        naive_delays.append(polls * w.baseline_s - lived)
        if remote.start_s is not None:
            runs.append((remote.end_s - remote.start_s) / 60)
        events = await store.history(local_id)
        ended = [e.at for e in events if e.to_state.is_terminal]
        if ended:
            end_delays.append(ended[0] - remote.end_s)
    done = len(local_ids) - unfinished
    return {
        "workload": w.name,
        "note": w.note,
        "jobs": len(local_ids),
        "jobs_finished": done,
        "run_minutes": [min(runs, default=math.nan), max(runs, default=math.nan)],
        "simulated_hours": (end_s - start_s) / 3600.0,
        "requests": counts,
        "reads": reads,
        "reads_per_job": reads / max(done, 1),
        "baseline_interval_s": w.baseline_s,
        "baseline_reads_per_job": baseline / max(done, 1),
        "ratio": baseline / reads if reads else math.inf,
        "end_detection_delay_s": {"p50": percentile(end_delays, 50),
                                  "p95": percentile(end_delays, 95),
                                  "max": max(end_delays, default=math.nan)},
        "baseline_end_detection_delay_s": {"p50": percentile(naive_delays, 50),
                                           "p95": percentile(naive_delays, 95)},
        "engine_steps": steps,
        "wall_s": wall,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20, help="jobs of workload a")
    p.add_argument("--run-spread", type=float, default=0.03,
                   help="the emulator's run-to-run variation of a job's speed (fraction)")
    p.add_argument("--only", default="", help="run only these workloads, e.g. 'a'")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--horizon-h", type=float, default=200.0, help="give up after this many "
                   "simulated hours")
    p.add_argument("--out", default=None, help="write JSON results here ('-' = stdout)")
    return p.parse_args(argv)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = [await run_workload(w, args) for w in workloads(args)]
    return {"benchmark": "reads_per_job", "machine": machine_info(), "seed": args.seed,
            "run_spread": args.run_spread, "workloads": results}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("error", "json")
    logging.getLogger().setLevel(logging.ERROR)
    result = asyncio.run(main_async(args))
    rows = []
    for r in result["workloads"]:
        rows.append([r["workload"], r["jobs_finished"], r["reads"], r["reads_per_job"],
                     r["baseline_reads_per_job"], r["ratio"],
                     r["end_detection_delay_s"]["p50"], r["end_detection_delay_s"]["p95"],
                     r["baseline_end_detection_delay_s"]["p95"], r["simulated_hours"],
                     r["wall_s"]])
    print(f"seed {args.seed}, run-to-run spread {args.run_spread:g}; run time = billable tokens "
          "x the emulator's rate (datasets sized for the drawn run times)")
    print(table(["workload", "done", "reads", "reads/job", "naive/job", "ratio", "end p50 s",
                 "end p95 s", "naive end p95 s", "sim h", "wall s"], rows))
    print("naive/job: a GET every baseline interval per job while it exists on Vertex "
          "(create..end); end: local terminal transition minus Vertex's endTime")
    for r in result["workloads"]:
        print(f"  {r['workload']}: {r['note']}; requests {r['requests']}")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
