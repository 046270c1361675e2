"""`python -m tests.sim.hunt`: the smallest seed that breaks an invariant under given options.

    python -m tests.sim.hunt --invariant duplicate --features late_creates --late-create-max 600
    python -m tests.sim.hunt --known          # every breakage of known_seeds.py

With --known each breakage runs with the CI baseline plus its own features. Seeds are scanned
upwards (in parallel, answers taken in seed order) and the first that breaks the invariant is
printed with its replay command. Re-run it whenever the sim's step choice changes: every seed
then tells another story.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence

from tests.sim import options as opt
from tests.sim.known_seeds import BREAKAGES
from tests.sim.run import Result, build_parser, options_from, run_one


def _run(args: tuple[int, opt.SimOptions]) -> Result:
    return run_one(*args)


def hunt(options: opt.SimOptions, invariant: str | None, *, limit: int,
         workers: int) -> Result | None:
    """The first seed below `limit` breaking `invariant` (any, if None), or None."""
    jobs = [(seed, options) for seed in range(limit)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        for result in pool.imap(_run, jobs, chunksize=2):
            if result.invariant is not None and invariant in (None, result.invariant):
                pool.terminate()
                return result
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m tests.sim.hunt"
    parser.add_argument("--invariant", help="the invariant to break (default: any)")
    parser.add_argument("--limit", type=int, default=500, help="seeds to try")
    parser.add_argument("--known", action="store_true",
                        help="hunt every breakage of known_seeds.py")
    args = parser.parse_args(argv)
    if args.known:
        targets = [(b.name, b.options(), b.invariant) for b in BREAKAGES]
    else:
        targets = [("hunt", options_from(args), args.invariant)]
    missing = 0
    for name, options, invariant in targets:
        found = hunt(options, invariant, limit=args.limit, workers=args.workers)
        if found is None:
            missing += 1
            print(f"# {name}: no seed below {args.limit} breaks {invariant or 'anything'}")
            continue
        print(f'    "{name}": {found.seed},  # {found.invariant}: {found.message[:70]}')
        print(f"    # replay: python -m tests.sim --seed {found.seed} {options.cli_args()} -v")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
