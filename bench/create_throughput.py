"""Create throughput: POST examples/request-basic.json to the real daemon vs a bare aiohttp server.

Three processes besides the load generator, all on 127.0.0.1:
- a standalone emulator (`python -m tuningd.cli emulator`, quota 1, hour-long jobs),
- the daemon (`python -m tuningd.cli serve --config <tmp toml>`, store in a temp dir,
  limits.max_active = 1, so nearly every create is stored and queued: the API + store path),
- bench/_bare_server.py: aiohttp parsing every POST's JSON body and echoing it as JSON.
Both servers get the same load: wrk (C, its own process; `apt-get install wrk`) when installed,
otherwise bench/_load_client.py processes. The daemon is loaded for --rounds consecutive rounds
against the same (growing) queue, so a slowdown with queue length shows.

    .venv/bin/python bench/create_throughput.py [--seconds 10] [--connections 32] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
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
    percentile,
    rss_kib,
    table,
    wait_for,
    write_json,
    write_toml,
)

BENCH = Path(__file__).resolve().parent
PATH = "/v1/projects/bench-proj/locations/us-central1/tuningJobs"


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime of each thread of a process (Linux /proc/<pid>/task), by thread id."""
    import os
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that ended meanwhile
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        return float("nan")
    value, unit = float(match[1]), match[2]
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def load_wrk(url: str, body_file: Path, connections: int, seconds: float,
             workdir: Path) -> dict[str, Any]:
    body = body_file.read_text(encoding="utf-8")
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body}]==]\n", encoding="utf-8")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script),
         url], capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    lat = {q: _ms(m[1]) for q in ("50", "99")
           if (m := re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", out, re.M))}
    return {"rps": rps, "requests": total, "non_2xx": int(non2xx[1]) if non2xx else 0,
            "socket_errors": errors[0] if errors else "", "p50_ms": lat.get("50"),
            "p99_ms": lat.get("99"), "client": "wrk -t1"}


def load_python(url: str, body_file: Path, connections: int, seconds: float,
                processes: int) -> dict[str, Any]:
    per = max(1, connections // processes)
    procs = [subprocess.Popen([PYTHON, str(BENCH / "_load_client.py"), url, str(body_file),
                               str(per), str(seconds)], stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    results = [json.loads(p.communicate(timeout=seconds + 60)[0]) for p in procs]
    ok = sum(r["ok"] for r in results)
    lats = [x for r in results for x in r["latencies_ms"]]
    return {"rps": ok / seconds, "requests": ok + sum(r["errors"] for r in results),
            "non_2xx": sum(r["errors"] for r in results), "socket_errors": "",
            "p50_ms": percentile(lats, 50), "p99_ms": percentile(lats, 99),
            "client": f"python aiohttp x{processes} processes"}


def run_load(args: argparse.Namespace, url: str, body_file: Path, workdir: Path,
             pid: int) -> dict[str, Any]:
    cpu0 = cpu_seconds(pid)
    threads0 = thread_cpu_seconds(pid)
    if args.client == "wrk":
        result = load_wrk(url, body_file, args.connections, args.seconds, workdir)
    else:
        result = load_python(url, body_file, args.connections, args.seconds, args.processes)
    result["server_cpu_s"] = cpu_seconds(pid) - cpu0
    threads1 = thread_cpu_seconds(pid)
    # The event loop's thread (the main one) against the rest (the store's connection threads,
    # the default executor): the loop is one core at most, the rest can use the other.
    main_s = threads1.get(pid, 0.0) - threads0.get(pid, 0.0)
    result["main_thread_cpu_ms_per_request"] = 1000.0 * main_s / max(result["requests"], 1)
    result["other_threads_cpu_ms_per_request"] = (
        1000.0 * (result["server_cpu_s"] - main_s) / max(result["requests"], 1))
    result["server_cpu_ms_per_request"] = (1000.0 * result["server_cpu_s"]
                                           / max(result["requests"], 1))
    result["server_rss_kib"] = rss_kib(pid)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="per load round")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2, help="consecutive rounds on the daemon")
    p.add_argument("--client", choices=["wrk", "python"],
                   default="wrk" if shutil.which("wrk") else "python")
    p.add_argument("--processes", type=int, default=2, help="python client processes")
    p.add_argument("--log-level", default="info", help="daemon logging.level (shipped: info)")
    p.add_argument("--body", type=Path, default=EXAMPLES / "request-basic.json")
    p.add_argument("--wrapper", type=Path, default=None,
                   help="run `python WRAPPER serve ...` instead of `python -m tuningd.cli serve "
                        "...` (for what-if experiments that patch the daemon)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    p.add_argument("--out", default=None, help="write JSON results here ('-' = stdout)")
    args = p.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="tuningd-bench-"))
    procs: list[Proc] = []
    result: dict[str, Any] = {"benchmark": "create_throughput", "machine": machine_info(),
                              "connections": args.connections, "seconds": args.seconds,
                              "client": args.client, "log_level": args.log_level}
    try:
        bare_port = free_port()
        bare = Proc([PYTHON, str(BENCH / "_bare_server.py"), str(bare_port)],
                    workdir / "bare.log")
        procs.append(bare)
        bare_url = f"http://127.0.0.1:{bare_port}{PATH}"
        wait_for(lambda: http_status(f"http://127.0.0.1:{bare_port}/") is not None, 20,
                 "the bare server")
        result["bare"] = run_load(args, bare_url, args.body, workdir, bare.pid)
        bare.stop()

        emu_port = free_port()
        emu = Proc([PYTHON, "-m", "tuningd.cli", "emulator", "--port", str(emu_port),
                    "--max-concurrent", "1", "--job-seconds", "3600",
                    "--ignore-unknown-fields"], workdir / "emulator.log")
        procs.append(emu)
        wait_for(lambda: http_status(f"http://127.0.0.1:{emu_port}/emulator/state") == 200,
                 20, "the emulator")
        port = free_port()
        config = workdir / "tuningd.toml"
        write_toml(config, {
            "server": {"host": "127.0.0.1", "port": port},
            "store": {"path": str(workdir / "tuningd.db")},
            "vertex": {"endpoint": f"http://127.0.0.1:{emu_port}", "anonymous": True},
            "limits": {"max_active": 1},
            "logging": {"level": args.log_level, "format": "json"},
        })
        entry = [str(args.wrapper)] if args.wrapper else ["-m", "tuningd.cli"]
        daemon = Proc([PYTHON, *entry, "serve", "--config", str(config)],
                      workdir / "daemon.log")
        procs.append(daemon)
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 30,
                 "the daemon")
        url = f"http://127.0.0.1:{port}{PATH}"
        result["daemon"] = [run_load(args, url, args.body, workdir, daemon.pid)
                            for _ in range(args.rounds)]
    finally:
        for proc in reversed(procs):
            proc.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")

    bare_r = result["bare"]
    rows = [["bare aiohttp", bare_r["rps"], bare_r["p50_ms"], bare_r["p99_ms"],
             bare_r["non_2xx"], bare_r["server_cpu_ms_per_request"],
             bare_r["main_thread_cpu_ms_per_request"], 1.0]]
    for i, r in enumerate(result["daemon"], 1):
        rows.append([f"tuningd round {i}", r["rps"], r["p50_ms"], r["p99_ms"], r["non_2xx"],
                     r["server_cpu_ms_per_request"], r["main_thread_cpu_ms_per_request"],
                     r["rps"] / bare_r["rps"]])
    result["ratio"] = result["daemon"][0]["rps"] / bare_r["rps"]
    result["ratio_last_round"] = result["daemon"][-1]["rps"] / bare_r["rps"]
    print(f"POST {args.body.name}, {args.connections} connections, {args.seconds:g}s per round, "
          f"client {bare_r['client']}, daemon log level {args.log_level}")
    print(table(["server", "req/s", "p50 ms", "p99 ms", "non-2xx", "cpu ms/req",
                 "loop thread ms/req", "vs bare"], rows))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
