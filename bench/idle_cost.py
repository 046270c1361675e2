"""Idle cost: what does the daemon spend while nothing can happen, however long its queue?

For each size, a fresh store gets two jobs through the real daemon, which submits them to a
standalone emulator (hour-long jobs, quota 2) and so fills its global limit (max_active 2). The
daemon is stopped, `size` queued jobs are inserted into its database directly (one executemany,
the store's own row format), and the daemon is started again on it: start-up time to /readyz 200
and RSS, then, after a settling pause, over `--seconds`: the daemon's CPU (utime + stime from
/proc, as a share of one core), its planning rounds per second and the p50/p99 of a round's time
(from its own `tuningd_engine_loop_round_seconds` histogram and iteration counter).

    .venv/bin/python bench/idle_cost.py [--sizes 1000,10000,100000] [--seconds 20] [--out idle.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    EXAMPLES,
    PYTHON,
    Proc,
    cpu_seconds,
    free_port,
    http_status,
    machine_info,
    rss_kib,
    table,
    wait_for,
    write_json,
    write_toml,
)

from tuningd.adapters.sqlite.store import JOB_COLUMNS, Store, _job_to_row
from tuningd.core.model import Job, LocalState

PROJECT = "bench-proj"
LOCATION = "us-central1"
BASE = f"/v1/projects/{PROJECT}/locations/{LOCATION}/tuningJobs"
T0 = 1_700_000_000.0


def scrape(port: int) -> dict[str, float]:
    """The daemon's loop counter and round histogram buckets (le -> cumulative count)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tuningd_engine_loop_iterations_total"):
            out["iterations"] = float(line.split()[-1])
        elif line.startswith("tuningd_engine_loop_round_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[f"le:{le}"] = float(line.split()[-1])
        elif line.startswith("tuningd_engine_loop_round_seconds_count"):
            out["count"] = float(line.split()[-1])
    return out


def quantile_bound(before: dict[str, float], after: dict[str, float], q: float) -> float:
    """The smallest histogram bound under which at least q of the window's rounds fell."""
    total = after.get("count", 0.0) - before.get("count", 0.0)
    if total <= 0:
        return float("nan")
    bounds = sorted((float(k[3:]) if k[3:] != "+Inf" else float("inf"), k)
                    for k in after if k.startswith("le:"))
    for bound, key in bounds:
        if after[key] - before.get(key, 0.0) >= q * total:
            return bound
    return float("inf")


def insert_queued(db: Path, size: int) -> float:
    """`size` queued jobs straight into the database (the daemon is stopped)."""
    spec = json.loads((EXAMPLES / "request-basic.json").read_text())
    spec_json = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    template = Job(id="x", project=PROJECT, location=LOCATION, spec_json=spec_json,
                   base_model=str(spec["baseModel"]), state=LocalState.QUEUED,
                   created_at=T0, updated_at=T0)
    col = {name: i for i, name in enumerate(JOB_COLUMNS)}
    base_row = list(_job_to_row(template))
    rows = []
    events = []
    for n in range(size):
        row = base_row.copy()
        job_id = f"{n:08d}-0000-4000-8000-000000000000"
        row[col["id"]] = job_id
        row[col["created_at"]] = row[col["updated_at"]] = T0 + n
        row[col["next_action_at"]] = T0 + n
        row[col["priority"]] = n % 3
        rows.append(tuple(row))
        events.append((job_id, 1, T0 + n, None, "queued", "accepted", "{}"))
    started = time.perf_counter()
    columns, marks = ", ".join(JOB_COLUMNS), ", ".join("?" * len(JOB_COLUMNS))
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(f"INSERT INTO jobs ({columns}) VALUES ({marks})", rows)
        conn.executemany("INSERT INTO job_events (job_id, seq, at, from_state, to_state, reason,"
                         " detail_json) VALUES (?, ?, ?, ?, ?, ?, ?)", events)
    conn.close()
    return time.perf_counter() - started


def post(port: int, body: bytes) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{BASE}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def states(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{BASE}?pageSize=100",
                                timeout=30) as resp:
        jobs = json.loads(resp.read() or b"{}").get("tuningJobs", [])
    return [str(j.get("tuningd", {}).get("state")) for j in jobs]


def measure(size: int, args: argparse.Namespace, workdir: Path, emu_port: int) -> dict[str, Any]:
    db = workdir / f"tuningd-{size}.db"
    asyncio.run(_create_schema(db))
    port = free_port()
    config = workdir / f"tuningd-{size}.toml"
    write_toml(config, {
        "server": {"host": "127.0.0.1", "port": port},
        "store": {"path": str(db)},
        "vertex": {"endpoint": f"http://127.0.0.1:{emu_port}", "anonymous": True},
        "limits": {"max_active": 2},
        "logging": {"level": "warning"},
    })
    argv = [PYTHON, "-m", "tuningd.cli", "serve", "--config", str(config)]
    daemon = Proc(argv, workdir / f"daemon-{size}-fill.log")
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 60, "the daemon")
        body = (EXAMPLES / "request-basic.json").read_bytes()
        post(port, body)
        post(port, body)
        wait_for(lambda: all(s in ("pending", "running") for s in states(port)), 120,
                 "two active jobs", interval_s=0.2)
    finally:
        daemon.stop()
    insert_s = insert_queued(db, size)
    started = time.perf_counter()
    daemon = Proc(argv, workdir / f"daemon-{size}.log")
    try:
        startup_s = wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 300,
                             "the daemon", interval_s=0.02)
        startup_s = time.perf_counter() - started
        rss_start = rss_kib(daemon.pid)
        time.sleep(args.settle)
        before, cpu0, t0 = scrape(port), cpu_seconds(daemon.pid), time.perf_counter()
        time.sleep(args.seconds)
        after, cpu1, t1 = scrape(port), cpu_seconds(daemon.pid), time.perf_counter()
        wall = t1 - t0
        rounds = after.get("iterations", 0.0) - before.get("iterations", 0.0)
        return {
            "queued": size,
            "insert_s": insert_s,
            "startup_s": startup_s,
            "rss_mib": rss_start / 1024,
            "rss_end_mib": rss_kib(daemon.pid) / 1024,
            "cpu_pct": 100.0 * (cpu1 - cpu0) / wall,
            "rounds_per_s": rounds / wall,
            "round_p50_le_ms": 1000 * quantile_bound(before, after, 0.50),
            "round_p99_le_ms": 1000 * quantile_bound(before, after, 0.99),
            "round_max_le_ms": 1000 * quantile_bound(before, after, 1.0),
        }
    finally:
        daemon.stop()


async def _create_schema(db: Path) -> None:
    store = await Store.open(db)
    await store.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window per size")
    p.add_argument("--settle", type=float, default=5.0, help="pause after start-up")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--out", default=None, help="write JSON results here ('-' = stdout)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tuningd-idle-"))
    emu_port = free_port()
    emu = Proc([PYTHON, "-m", "tuningd.cli", "emulator", "--port", str(emu_port),
                "--max-concurrent", "2", "--job-seconds", "36000", "--pending-seconds", "1",
                "--ignore-unknown-fields"], workdir / "emulator.log")
    results = []
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{emu_port}/emulator/state") == 200, 20,
                 "the emulator")
        for size in (int(s) for s in args.sizes.split(",")):
            results.append(measure(size, args, workdir, emu_port))
            print(f"  measured {size:,} queued", file=sys.stderr)
    finally:
        emu.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"global limit full (max_active 2, 2 hour-long jobs running), "
          f"{args.seconds:g} s window after {args.settle:g} s settling")
    print(table(
        ["queued", "start-up s", "RSS MiB", "CPU % of a core", "rounds/s", "round p50 <= ms",
         "round p99 <= ms", "round max <= ms"],
        [[r["queued"], r["startup_s"], r["rss_mib"], r["cpu_pct"], r["rounds_per_s"],
          r["round_p50_le_ms"], r["round_p99_le_ms"], r["round_max_le_ms"]] for r in results]))
    print("round times are histogram bounds (tuningd_engine_loop_round_seconds): "
          "'p99 <= 5' means 99 % of rounds took at most 5 ms")
    write_json(args.out, {"machine": machine_info(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
