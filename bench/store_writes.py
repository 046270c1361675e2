"""Store alone: group-committed writes per second and read latency, on a real file in a temp dir.

For each writer count W: W asyncio tasks share `--jobs` creates (`Store.create_or_get`, labels
and one event each), then the same tasks apply one transition to every job (`Store.apply`, row
update + event). Then `--reads` single-job `Store.get` calls and `Store.list_page` first pages
(one at a time, p50/p99). `commits` shows group commit at work (fewer commits than writes).
Each writer count gets a fresh database; synchronous=FULL as in the daemon, so the figures
depend on the disk's fsync: `--dir /dev/shm` (tmpfs, fsync free) leaves the CPU path alone,
where the store's own overhead shows. CPU is the process's (all threads) per write.

    .venv/bin/python bench/store_writes.py [--jobs 3000] [--writers 1,32] [--dir /dev/shm]
                                           [--out f.json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_info, percentile, table, write_json

from tuningd.adapters.sqlite.store import Store
from tuningd.core.model import Job, LocalState


def make_job(n: int) -> Job:
    return Job(
        id=f"job{n:07d}", project="bench-proj", location="us-central1",
        spec_json='{"baseModel": "gemini-2.0-flash-001", "labels": {"team": "a"}}',
        base_model="gemini-2.0-flash-001", state=LocalState.QUEUED,
        created_at=1_700_000_000.0 + n, updated_at=1_700_000_000.0 + n,
    )


async def _share(writers: int, count: int, one: Any) -> tuple[float, float]:
    """Run `one(i)` for i in range(count) over `writers` tasks; (wall, CPU) seconds taken."""
    it = iter(range(count))

    async def worker() -> None:
        for i in it:
            await one(i)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(writers)))
    return time.perf_counter() - start, time.process_time() - cpu


async def run_one(db: Path, writers: int, jobs: int, reads: int) -> dict[str, Any]:
    store = await Store.open(db)
    try:
        created = [make_job(n) for n in range(jobs)]

        async def create(i: int) -> None:
            await store.create_or_get(created[i])

        create_s, create_cpu_s = await _share(writers, jobs, create)
        create_commits = store.commits

        async def apply(i: int) -> None:
            before = created[i]
            after = before.evolve(state=LocalState.SUBMITTING, updated_at=before.updated_at + 1)
            await store.apply(before, after, "submit")

        apply_s, apply_cpu_s = await _share(writers, jobs, apply)
        get_ms: list[float] = []
        page_ms: list[float] = []
        for i in range(reads):
            start = time.perf_counter()
            await store.get(created[(i * 7919) % jobs].id)
            get_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            await store.list_page("bench-proj", "us-central1", limit=50)
            page_ms.append((time.perf_counter() - start) * 1000)
        return {
            "writers": writers, "jobs": jobs,
            "create_per_s": jobs / create_s, "create_commits": create_commits,
            "create_cpu_ms": create_cpu_s * 1000 / jobs,
            "apply_per_s": jobs / apply_s, "apply_commits": store.commits - create_commits,
            "apply_cpu_ms": apply_cpu_s * 1000 / jobs,
            "get_p50_ms": percentile(get_ms, 50), "get_p99_ms": percentile(get_ms, 99),
            "page_p50_ms": percentile(page_ms, 50), "page_p99_ms": percentile(page_ms, 99),
        }
    finally:
        await store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=3000)
    p.add_argument("--writers", default="1,32")
    p.add_argument("--reads", type=int, default=500)
    p.add_argument("--dir", default=None, help="where the temp database goes (default: $TMPDIR)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    results = []
    for writers in (int(w) for w in args.writers.split(",")):
        with tempfile.TemporaryDirectory(prefix="tuningd-bench-store-", dir=args.dir) as tmp:
            results.append(asyncio.run(
                run_one(Path(tmp) / "bench.db", writers, args.jobs, args.reads)))
    keys = ["create_per_s", "create_commits", "create_cpu_ms", "apply_per_s", "apply_commits",
            "apply_cpu_ms",
            "get_p50_ms", "get_p99_ms", "page_p50_ms", "page_p99_ms"]
    print(table(["metric", *(f"{r['writers']} writers" for r in results)],
                [[k, *(r[k] for r in results)] for k in keys]))
    write_json(args.out, {"machine": machine_info(), "results": results})


if __name__ == "__main__":
    main()
