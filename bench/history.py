"""History size: is the daemon as fast with 100,000 finished jobs as with 1,000?

For each size, a fresh database is filled directly (one executemany, consistent with the schema:
a job row plus its events `accepted` -> ... -> terminal), then the real daemon is started on it
(`python -m tuningd.cli serve`, Vertex endpoint an unreachable loopback port: no job is active,
so nothing calls it) and measured over loopback with one keep-alive connection:
start-up time to /readyz 200, RSS after start, and p50/p99 latency of GET by id, the first list
page, list with a label filter and with a state filter (common and rare matches), and a deep
page (the pageToken after 50 pages).

    .venv/bin/python bench/history.py [--sizes 1000,10000,100000] [--out history.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    Proc,
    free_port,
    http_status,
    machine_info,
    percentile,
    rss_kib,
    table,
    wait_for,
    write_json,
    write_toml,
)

from tuningd.adapters.sqlite.store import JOB_COLUMNS, _job_to_row
from tuningd.core.model import Job, LocalState, Outcome

PROJECT = "bench-proj"
LOCATION = "us-central1"
BASE = f"/v1/projects/{PROJECT}/locations/{LOCATION}/tuningJobs"
T0 = 1_700_000_000.0
# Label values: "a".."d" share 99.9 % of the jobs; "rare" is on one job in a thousand.
TEAMS = ("a", "b", "c", "d")


def _spec(team: str, n: int) -> str:
    spec = {"baseModel": "gemini-2.5-flash",
            "supervisedTuningSpec": {"trainingDatasetUri": f"gs://bench/train-{n % 97}.jsonl"},
            "tunedModelDisplayName": f"job-{n}", "labels": {"team": team}}
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def fill(db: Path, size: int, seed: int) -> float:
    """Create the schema (Store.open) and insert `size` terminal jobs with their events."""
    import asyncio

    from tuningd.adapters.sqlite.store import Store

    async def create() -> None:
        store = await Store.open(db)
        await store.close()

    asyncio.run(create())
    started = time.perf_counter()
    rng = random.Random(seed)
    template = Job(id="x", project=PROJECT, location=LOCATION, spec_json="{}",
                   base_model="gemini-2.5-flash", state=LocalState.SUCCEEDED,
                   created_at=T0, updated_at=T0)
    col = {name: i for i, name in enumerate(JOB_COLUMNS)}
    base_row = list(_job_to_row(template))
    rows: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    labels: list[tuple[Any, ...]] = []
    for n in range(size):
        team = "rare" if n % 1000 == 500 else TEAMS[n % 4]
        roll = rng.random()
        state, outcome = ((LocalState.SUCCEEDED, Outcome.NORMAL) if roll < 0.8 else
                          (LocalState.FAILED, Outcome.NORMAL) if roll < 0.9 else
                          (LocalState.CANCELLED, Outcome.NORMAL))
        created = T0 + n * 60.0
        ended = created + 3600.0
        remote_id = f"{7_000_000_000_000_000_000 + n}"
        row = base_row.copy()
        row[col["id"]] = f"{n:08d}-0000-4000-8000-{rng.getrandbits(48):012x}"
        row[col["spec_json"]] = _spec(team, n)
        row[col["state"]] = state.value
        row[col["created_at"]] = created
        row[col["updated_at"]] = ended
        row[col["display_name"]] = f"job-{n}"
        row[col["attempts"]] = 1
        row[col["remote_name"]] = (f"projects/123456789012/locations/{LOCATION}/tuningJobs/"
                                   f"{remote_id}")
        row[col["remote_state"]] = {"succeeded": "JOB_STATE_SUCCEEDED",
                                    "failed": "JOB_STATE_FAILED",
                                    "cancelled": "JOB_STATE_CANCELLED"}[state.value]
        row[col["submit_started_at"]] = row[col["submitted_at"]] = created + 1
        row[col["ended_at"]] = ended
        row[col["outcome"]] = outcome.value if outcome else None
        if state is LocalState.FAILED:
            row[col["error_code"]] = 3
            row[col["error_message"]] = "dataset invalid"
        rows.append(tuple(row))
        job_id = row[col["id"]]
        labels.append((job_id, "team", team, PROJECT, LOCATION, created))
        steps = [(None, "queued", "accepted", created), ("queued", "submitting", "submit",
                                                        created + 1),
                 ("submitting", "pending", "created", created + 2),
                 ("pending", "running", "remote_observed", created + 300),
                 ("running", state.value, "remote_observed", ended)]
        for seq, (frm, to, reason, at) in enumerate(steps, 1):
            events.append((job_id, seq, at, frm, to, reason, "{}"))
    columns, marks = ", ".join(JOB_COLUMNS), ", ".join("?" * len(JOB_COLUMNS))
    with sqlite3.connect(db) as conn:
        conn.executemany(f"INSERT INTO jobs ({columns}) VALUES ({marks})", rows)
        conn.executemany("INSERT INTO job_events (job_id, seq, at, from_state, to_state, reason,"
                         " detail_json) VALUES (?, ?, ?, ?, ?, ?, ?)", events)
        # The store's label index (schema v2), as Store.create_or_get writes it.
        conn.executemany("INSERT INTO job_labels (job_id, key, value, project, location,"
                         " created_at) VALUES (?, ?, ?, ?, ?, ?)", labels)
    conn.close()
    return time.perf_counter() - started


class Client:
    """One keep-alive HTTP/1.1 connection; get() returns (status, json, seconds)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> tuple[int, Any, float]:
        started = time.perf_counter()
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - started
        return resp.status, json.loads(body) if body else None, elapsed

    def close(self) -> None:
        self.conn.close()


def measure(client: Client, path: str, *, max_requests: int, budget_s: float) -> dict[str, Any]:
    lat: list[float] = []
    deadline = time.perf_counter() + budget_s
    status = 0
    count = 0
    while len(lat) < max_requests and (len(lat) < 3 or time.perf_counter() < deadline):
        status, body, elapsed = client.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body}")
        lat.append(elapsed * 1000.0)
        count = len((body or {}).get("tuningJobs", [])) if isinstance(body, dict) else 0
    return {"p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "n": len(lat),
            "status": status, "returned": count}


def store_level(db: Path, rounds: int = 20) -> dict[str, Any]:
    """p50/p99 of the store's own filtered pages (what an API that pushes filters down gets)."""
    import asyncio

    from tuningd.adapters.sqlite.store import Store

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        store = await Store.open(db)
        try:
            cases: dict[str, dict[str, Any]] = {
                "first page": {},
                "label (1/4)": {"labels": {"team": "a"}},
                "label (rare)": {"labels": {"team": "rare"}},
                "state (10%)": {"states": {LocalState.FAILED}},
                "state (none)": {"states": {LocalState.RUNNING}},
            }
            for name, kw in cases.items():
                lat = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    await store.list_page(PROJECT, LOCATION, limit=50, **kw)
                    lat.append((time.perf_counter() - started) * 1000.0)
                out[name] = {"p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)}
        finally:
            await store.close()
        return out

    return asyncio.run(run())


def list_path(**query: str) -> str:
    return BASE + ("?" + urllib.parse.urlencode(query) if query else "")


def run_size(size: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    db = workdir / f"h{size}.db"
    fill_s = fill(db, size, args.seed)
    store_ms = store_level(db)
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM jobs ORDER BY random() LIMIT 200")]
    conn.close()
    port = free_port()
    config = workdir / f"h{size}.toml"
    write_toml(config, {
        "server": {"host": "127.0.0.1", "port": port},
        # The history is dated 2023: retention (90 days by default) would prune it at start.
        "store": {"path": str(db), "retention_days": 0},
        "vertex": {"endpoint": "http://127.0.0.1:9", "anonymous": True},
        "logging": {"level": args.log_level, "format": "json"},
    })
    started = time.perf_counter()
    daemon = Proc([PYTHON, "-m", "tuningd.cli", "serve", "--config", str(config)],
                  workdir / f"h{size}.log")
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz", 5) == 200, 120,
                 "the daemon's /readyz")
        startup_s = time.perf_counter() - started
        rss_start = rss_kib(daemon.pid)
        client = Client(port)
        m: dict[str, Any] = {}
        opts = {"max_requests": args.requests, "budget_s": args.budget}
        rng = random.Random(args.seed)
        lat: list[float] = []
        for _ in range(args.requests):
            status, body, elapsed = client.get(f"{BASE}/{rng.choice(ids)}")
            assert status == 200, body
            lat.append(elapsed * 1000.0)
        m["get by id"] = {"p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                          "n": len(lat), "returned": 1}
        m["list first page"] = measure(client, list_path(pageSize="50"), **opts)
        m["list label (1/4)"] = measure(
            client, list_path(pageSize="50", filter='labels.team="a"'), **opts)
        m["list label (rare)"] = measure(
            client, list_path(pageSize="50", filter='labels.team="rare"'), **opts)
        m["list state (10%)"] = measure(
            client, list_path(pageSize="50", filter='state="JOB_STATE_FAILED"'), **opts)
        m["list state (none)"] = measure(
            client, list_path(pageSize="50", filter='state="JOB_STATE_RUNNING"'), **opts)
        token = None
        pages = min(50, max(1, size // 50 - 1))
        for _ in range(pages):
            status, body, _ = client.get(list_path(pageSize="50", **(
                {"pageToken": token} if token else {})))
            token = body.get("nextPageToken")
            if not token:
                break
        m[f"list page {pages + 1}"] = measure(
            client, list_path(pageSize="50", **({"pageToken": token} if token else {})), **opts)
        rss_after = rss_kib(daemon.pid)
        client.close()
    finally:
        daemon.stop()
    return {"size": size, "fill_s": fill_s, "startup_s": startup_s,
            "rss_after_start_mib": rss_start / 1024.0, "rss_after_queries_mib": rss_after / 1024.0,
            "db_mib": sum(p.stat().st_size for p in workdir.glob(f"h{size}.db*")) / 2**20,
            "latency": m, "store_list_page": store_ms}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--requests", type=int, default=200, help="max requests per query")
    p.add_argument("--budget", type=float, default=2.0, help="max seconds per query (>= 3 "
                   "requests are always made)")
    p.add_argument("--log-level", default="warning",
                   help="daemon logging.level (default warning: logging is not measured here)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", default=None, help="write JSON results here ('-' = stdout)")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tuningd-bench-history-"))
    results = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            results.append(run_size(size, args, workdir))
            r = results[-1]
            print(f"  {size:>7,} jobs: filled in {r['fill_s']:.1f}s, ready in "
                  f"{r['startup_s']:.2f}s", flush=True)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sizes = [r["size"] for r in results]
    rows: list[list[Any]] = [
        ["start-up to /readyz (s)", *(r["startup_s"] for r in results)],
        ["RSS after start (MiB)", *(r["rss_after_start_mib"] for r in results)],
        ["RSS after queries (MiB)", *(r["rss_after_queries_mib"] for r in results)],
        ["database size (MiB)", *(r["db_mib"] for r in results)],
    ]
    names = list(results[0]["latency"]) if results else []
    for name in names:
        for q in ("p50", "p99"):
            key = name if not name.startswith("list page") else "list deep page"
            row = [f"{key} {q} ms"]
            for r in results:
                found = next((v for k, v in r["latency"].items()
                              if k == name or (k.startswith("list page")
                                               and name.startswith("list page"))), None)
                row.append(found[f"{q}_ms"] if found else float("nan"))
            rows.append(row)
    for name in results[0]["store_list_page"] if results else []:
        rows.append([f"Store.list_page {name} p50 ms",
                     *(r["store_list_page"][name]["p50_ms"] for r in results)])
    print(table(["metric", *(f"{s:,} jobs" for s in sizes)], rows))
    write_json(args.out, {"benchmark": "history", "machine": machine_info(),
                          "log_level": args.log_level, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
