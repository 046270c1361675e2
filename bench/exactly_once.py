"""Exactly-once on real processes with the shipped defaults: late creates, a lagging list, a 403.

The run behind issue 7's "Done when": a real `tuningd serve` with nothing configured but its
listener, its database and the emulator's address, against a real `tuningd emulator` whose
creates sometimes land 90 s after the daemon's 60 s timeout gave up on them, whose list lags 30 s
behind, and (second scenario) which refuses every create with 403 for 10 minutes.

    python bench/exactly_once.py late --jobs 100            # ~1 h with max_active = 1
    python bench/exactly_once.py forbidden --jobs 20        # ~15 min
    python bench/exactly_once.py late --jobs 10 --late-rate 0.3 --out late.json

Prints and (with --out) saves: accepted jobs, remote jobs, duplicates, terminal states, the
daemon's unknown create outcomes, reconcile results, breaker openings and the wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from _common import (
    PYTHON,
    Proc,
    free_port,
    http_status,
    machine_info,
    wait_for,
    write_json,
    write_toml,
)

PROJECT, LOCATION = "my-proj", "us-central1"
TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}


def call(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def job_body(name: str) -> dict[str, Any]:
    return {"baseModel": "gemini-2.5-flash", "tunedModelDisplayName": name,
            "supervisedTuningSpec": {"trainingDatasetUri": "gs://bench/train.jsonl"}}


def metric_values(text: str, name: str) -> dict[str, float]:
    """Samples of one metric family from Prometheus text: {label string: value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key[len(name):] or "{}"] = float(value)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tuningd-exactly-once-"))
    emu_port, api_port = free_port(), free_port()
    emu_argv = [PYTHON, "-m", "tuningd.cli", "emulator", "--port", str(emu_port),
                "--job-seconds", str(args.job_seconds), "--pending-seconds", "1",
                "--max-concurrent", "1", "--seed", str(args.seed)]
    if args.scenario == "late":
        emu_argv += ["--late-create-rate", str(args.late_rate),
                     "--late-create-delay-s", str(args.late_delay_s),
                     "--late-create-hold-s", str(args.hold_s),
                     "--list-lag-s", str(args.list_lag_s)]
    emu = Proc(emu_argv, work / "emulator.log")
    emu_url = f"http://127.0.0.1:{emu_port}"
    wait_for(lambda: http_status(emu_url + "/emulator/state") == 200, 30, "the emulator")
    # Shipped defaults for everything but where to listen, store and reach Vertex.
    write_toml(work / "tuningd.toml", {
        "server": {"port": api_port}, "store": {"path": str(work / "tuningd.db")},
        "vertex": {"endpoint": emu_url, "anonymous": True},
        "logging": {"format": "json"}})
    daemon = Proc([PYTHON, "-m", "tuningd.cli", "serve", "--config", str(work / "tuningd.toml")],
                  work / "daemon.log")
    api = f"http://127.0.0.1:{api_port}"
    collection = f"{api}/v1/projects/{PROJECT}/locations/{LOCATION}/tuningJobs"
    started = time.monotonic()
    try:
        wait_for(lambda: http_status(api + "/readyz") == 200, 30, "the daemon")
        ids = [call("POST", collection, job_body(f"eo-{i}"))["name"].rsplit("/", 1)[-1]
               for i in range(args.jobs)]
        if args.scenario == "forbidden":
            call("POST", emu_url + "/emulator/faults",
                 {"error_rules": [{"status": 403, "method": "create"}]})
            time.sleep(args.forbid_s)  # the outage itself: real time is the point here
            states = Counter(call("GET", f"{collection}/{i}")["tuningd"]["state"] for i in ids)
            print(f"after {args.forbid_s:.0f} s of 403s: {dict(states)}", flush=True)
            forbidden_states = dict(states)
            call("POST", emu_url + "/emulator/faults", {})

        def all_ended() -> bool:
            states = [call("GET", f"{collection}/{i}")["state"] for i in ids]
            print(f"{time.monotonic() - started:7.0f} s  {dict(Counter(states))}", flush=True)
            return all(s in TERMINAL for s in states)

        wait_for(all_ended, args.timeout_s, "every job to end", interval_s=30)
        wall_s = time.monotonic() - started
        views = [call("GET", f"{collection}/{i}") for i in ids]
        emu_state = call("GET", emu_url + "/emulator/state")
        with urllib.request.urlopen(api + "/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
    finally:
        daemon.stop()
        emu.stop()
    by_label: Counter[str] = Counter(
        str((j.get("request") or {}).get("labels", {}).get("tuningd-job-id")) for j in
        emu_state["jobs"])
    result = {
        "scenario": args.scenario, "jobs": args.jobs, "wall_s": round(wall_s),
        "remote_jobs": len(emu_state["jobs"]),
        "duplicates": sum(n - 1 for n in by_label.values() if n > 1),
        "local_states": dict(Counter(v["state"] for v in views)),
        "remote_states": dict(Counter(j["state"] for j in emu_state["jobs"])),
        "emulator_requests": emu_state["requestCounts"],
        "unknown_create_outcomes": metric_values(metrics,
                                                 "tuningd_unknown_create_outcomes_total"),
        "reconciliations": metric_values(metrics, "tuningd_submit_reconciliations_total"),
        "create_pauses": metric_values(metrics, "tuningd_create_pauses_total"),
        "sweep_findings": metric_values(metrics, "tuningd_sweep_findings_total"),
        "machine": machine_info(), "work_dir": str(work),
    }
    if args.scenario == "forbidden":
        result["states_after_outage"] = forbidden_states
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["late", "forbidden"])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--job-seconds", type=float, default=5.0)
    parser.add_argument("--late-rate", type=float, default=0.1)
    parser.add_argument("--late-delay-s", type=float, default=90.0)
    parser.add_argument("--hold-s", type=float, default=60.0,
                        help="emulator holds a late create this long (>= the 60 s timeout)")
    parser.add_argument("--list-lag-s", type=float, default=30.0)
    parser.add_argument("--forbid-s", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout-s", type=float, default=4 * 3600)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    write_json(args.out, result)
    ok = (result["remote_jobs"] == args.jobs and result["duplicates"] == 0
          and result["local_states"] == {"JOB_STATE_SUCCEEDED": args.jobs})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
