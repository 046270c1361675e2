"""`python -m tests.sim.hunt`: the smallest seed that shows each known breakage (known_seeds.py).

Each breakage is the CI baseline plus the features that provoke it; the hunt scans seeds upwards
and keeps the first whose run breaks the expected invariant. Re-run it whenever the sim's step
choice changes (every seed then tells another story) and paste its output into known_seeds.py.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from collections.abc import Sequence

from tests.sim import options as opt
from tests.sim.known_seeds import BREAKAGES, Breakage
from tests.sim.run import Result, run_one


def _run(args: tuple[int, opt.SimOptions]) -> Result:
    return run_one(*args)


def hunt(breakage: Breakage, *, limit: int, workers: int,
         base: frozenset[str] = opt.CI_BASELINE) -> Result | None:
    """The first seed below `limit` breaking the breakage's invariant, or None."""
    options = opt.SimOptions().with_features(base | breakage.adds)
    jobs = [(seed, options) for seed in range(limit)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        for result in pool.imap(_run, jobs, chunksize=2):
            if result.invariant == breakage.invariant:
                pool.terminate()
                return result
    return None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.sim.hunt", description=__doc__)
    p.add_argument("--limit", type=int, default=500, help="seeds to try per breakage")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--only", help="comma list of breakage names")
    args = p.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else None
    missing = 0
    for breakage in BREAKAGES:
        if wanted is not None and breakage.name not in wanted:
            continue
        found = hunt(breakage, limit=args.limit, workers=args.workers)
        if found is None:
            missing += 1
            print(f"# {breakage.name}: no seed below {args.limit} breaks {breakage.invariant}")
            continue
        print(f'    "{breakage.name}": {found.seed},  # {found.message[:80]}')
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
