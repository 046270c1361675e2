"""Command line: one seed replayed with its trace, or many seeds in parallel with a summary."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tests.sim import options as opt
from tests.sim.driver import Outcome, run_seed


@dataclass(frozen=True)
class Result:
    """What a worker process sends back for one seed (picklable, small)."""

    seed: int
    invariant: str | None
    message: str
    steps: int
    jobs: int
    sim_s: float
    wall_s: float
    trace_hash: str
    tail: tuple[str, ...]
    stats: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, outcome: Outcome) -> Result:
        v = outcome.violation
        return cls(outcome.seed, v.invariant if v else None, v.message if v else "",
                   outcome.steps, outcome.jobs, outcome.sim_s, outcome.wall_s,
                   outcome.trace_hash, tuple(outcome.tail), tuple(sorted(outcome.stats.items())))


def run_one(seed: int, options: opt.SimOptions) -> Result:
    """One seed in a fresh event loop."""
    return Result.of(asyncio.run(run_seed(seed, options)))


def _worker(args: tuple[int, opt.SimOptions]) -> Result:
    return run_one(*args)


def run_many(seeds: Iterable[int], options: opt.SimOptions, workers: int) -> Iterable[Result]:
    """Results as they finish (any order); one process per worker, forked."""
    jobs = [(s, options) for s in seeds]
    if workers <= 1:
        for job in jobs:
            yield _worker(job)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        yield from pool.imap_unordered(_worker, jobs, chunksize=4)


def parse_seeds(text: str) -> range:
    start, sep, stop = text.partition(":")
    if not sep:
        return range(int(start), int(start) + 1)
    return range(int(start or 0), int(stop))


def options_from(args: argparse.Namespace) -> opt.SimOptions:
    features = opt.PROFILES[args.profile]
    if args.features is not None:
        features = frozenset() if args.features == "none" else frozenset(
            f for f in args.features.split(",") if f)
    if args.without:
        features = features - frozenset(args.without.split(","))
    return opt.SimOptions(
        steps=args.steps, max_jobs=args.jobs, beyond_bounds=args.beyond_bounds,
        request_timeout_s=args.request_timeout, late_create_max_s=args.late_create_max,
        list_lag_s=args.list_lag, list_lag_max_s=args.list_lag_max, metrics=not args.no_metrics,
    ).with_features(frozenset(features))


def build_parser() -> argparse.ArgumentParser:
    defaults = opt.SimOptions()
    p = argparse.ArgumentParser(
        prog="python -m tests.sim",
        description="Deterministic simulation of tuningd against the Vertex emulator.")
    p.add_argument("--seed", type=int, help="run (replay) one seed")
    p.add_argument("--seeds", default="0:100", help="range A:B of seeds (default 0:100)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--profile", choices=sorted(opt.PROFILES), default="full",
                   help="feature set: full (default) or ci (what main survives today)")
    p.add_argument("--features", help=f"exact comma list (overrides --profile); any of: "
                                      f"{','.join(opt.FEATURES)}; or none")
    p.add_argument("--without", help="comma list of features to switch off")
    p.add_argument("--steps", type=int, default=defaults.steps, help="main-phase steps")
    p.add_argument("--jobs", type=int, default=defaults.max_jobs, help="most jobs per seed")
    p.add_argument("--beyond-bounds", action="store_true",
                   help="late creates / list lag / clock jumps past what the daemon assumes")
    p.add_argument("--request-timeout", type=float, default=defaults.request_timeout_s,
                   help="client timeout, also what the daemon assumes a late create takes")
    p.add_argument("--late-create-max", type=float, default=None,
                   help="longest late create (default: the request timeout)")
    p.add_argument("--list-lag", type=float, default=defaults.list_lag_s,
                   help="the list lag the daemon assumes (reconcile.list_lag_s)")
    p.add_argument("--list-lag-max", type=float, default=None,
                   help="longest list lag (default: what the daemon assumes)")
    p.add_argument("--no-metrics", action="store_true",
                   help="run the engine without metrics (faster; the same traces)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the step trace")
    p.add_argument("--show", type=int, default=10, help="failing seeds to print in full")
    p.add_argument("--report", help="write one JSON line per seed to this file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from(args)
    if args.seed is not None:
        return _replay(args.seed, options, verbose=args.verbose)
    return _sweep(parse_seeds(args.seeds), options, args)


def _replay(seed: int, options: opt.SimOptions, *, verbose: bool) -> int:
    echo = print if verbose else None
    outcome = asyncio.run(run_seed(seed, options, echo))
    print(f"seed {seed}: {'ok' if outcome.ok else 'FAILED'}; {outcome.steps} steps, "
          f"{outcome.jobs} jobs, {outcome.sim_s:.0f} s simulated, {outcome.wall_s:.2f} s wall; "
          f"trace {outcome.trace_hash[:16]}")
    if not outcome.ok:
        assert outcome.violation is not None
        if not verbose:
            print("\n".join(outcome.tail))
        print(f"invariant {outcome.violation.invariant}: {outcome.violation.message}")
        print(f"replay: {outcome.replay_command()}")
        return 1
    return 0


def _sweep(seeds: range, options: opt.SimOptions, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    failures: list[Result] = []
    steps = 0
    count = 0
    totals: Counter[str] = Counter()
    report = open(args.report, "w", encoding="utf-8") if args.report else None  # noqa: SIM115
    try:
        for result in run_many(seeds, options, args.workers):
            count += 1
            steps += result.steps
            totals.update(dict(result.stats))
            totals["jobs"] += result.jobs
            if result.invariant is not None:
                failures.append(result)
            if report is not None:
                report.write(json.dumps({"seed": result.seed, "invariant": result.invariant,
                                         "message": result.message, "steps": result.steps,
                                         "jobs": result.jobs, "wall_s": round(result.wall_s, 4),
                                         "hash": result.trace_hash,
                                         "stats": dict(result.stats)}) + "\n")
    finally:
        if report is not None:
            report.close()
    wall = time.perf_counter() - started
    failures.sort(key=lambda r: r.seed)
    for result in failures[:args.show]:
        print(f"--- seed {result.seed}: {result.invariant}: {result.message}")
        print("\n".join(result.tail[-15:]))
        print(f"replay: python -m tests.sim --seed {result.seed} {options.cli_args()} -v")
    by_invariant = Counter(r.invariant for r in failures)
    print(f"\noptions: {options.cli_args()}")
    print(f"seeds run: {count} ({seeds.start}:{seeds.stop}), failures: {len(failures)}")
    for name, n in sorted(by_invariant.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        first = min(r.seed for r in failures if r.invariant == name)
        print(f"  {name}: {n} (smallest seed {first})")
    print("exercised: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    print(f"wall {wall:.1f} s, {count / wall:.1f} seeds/s, {steps / wall:.0f} steps/s, "
          f"{args.workers} worker(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
