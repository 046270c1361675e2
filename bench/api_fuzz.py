"""Schemathesis against a real daemon, from its own /openapi.json: no 5xx, nothing off-schema.

Starts a real `tuningd emulator` and a real `tuningd serve` (bearer token on, shipped defaults
otherwise), then runs the schemathesis CLI on every operation of /openapi.json: the examples,
coverage, fuzzing and stateful phases (the create answer links to get, cancel and lookup), with
the checks that hold the daemon to its document (server errors, status codes, Content-Types,
response headers and bodies against the schema, schema-invalid input refused, auth enforced,
created jobs readable). Afterwards the daemon's log must hold no traceback and no 5xx answer.

    .venv/bin/python bench/api_fuzz.py                      # the full run: ~2,000+ cases
    .venv/bin/python bench/api_fuzz.py --examples 50 --seed 7 --out fuzz.json
    .venv/bin/python bench/api_fuzz.py --examples 4         # what CI runs (tests/acceptance)

Exit status 0 when schemathesis passed and the log is clean; the summary (cases generated,
passed, failed, statuses answered, wall time) is printed and, with --out, saved as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import PYTHON, REPO, Proc, free_port, http_status, wait_for, write_json, write_toml

TOKEN = "fuzz-token-0123456789"
# Every check that holds the daemon to its document. Left out: positive_data_acceptance (a body
# the schema admits may still break one of Vertex's rules the schema cannot say, e.g. an adapter
# size the model lacks), unsupported_method (Google answers 404 "Method not found.", not 405) and
# object_level_authorization (one token, no users).
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,negative_data_rejection,"
          "missing_required_header,use_after_free,ensure_resource_availability,ignored_auth")
_CASES_RE = re.compile(r"(\d+) generated(?:, (\d+) passed)?(?:, (\d+) failed)?")


def schemathesis_argv(url: str, args: argparse.Namespace, report_dir: Path) -> list[str]:
    return [PYTHON, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
            "--header", f"Authorization: Bearer {TOKEN}",
            "--max-examples", str(args.examples), "--seed", str(args.seed),
            # One worker: CPython 3.11's ast module is not thread-safe, and hypothesis parses
            # lambdas with it ("AST constructor recursion depth mismatch" with more workers).
            "--workers", "1", "--checks", CHECKS,
            "--request-timeout", "30", "--report", "junit", "--report-dir", str(report_dir)]


def log_findings(log_path: Path) -> dict[str, Any]:
    """Statuses the daemon answered, and any traceback or 5xx in its JSON log."""
    statuses: Counter[int] = Counter()
    tracebacks = 0
    server_errors: list[str] = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if "Traceback" in line:
            tracebacks += 1
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("event") == "api_request":
            statuses[int(record["status"])] += 1
            if int(record["status"]) >= 500:
                server_errors.append(f"{record['method']} {record['path']}"[:200])
        elif record.get("event") == "request.malformed":
            statuses[int(record["status"])] += 1
    return {"statuses": dict(sorted(statuses.items())), "tracebacks": tracebacks,
            "server_errors": server_errors[:20]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tuningd-api-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    emu_port, api_port = free_port(), free_port()
    emu_url, api_url = f"http://127.0.0.1:{emu_port}", f"http://127.0.0.1:{api_port}"
    token_file = work / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    os.chmod(token_file, 0o600)
    write_toml(work / "tuningd.toml", {
        "server": {"port": api_port, "token_file": str(token_file)},
        "store": {"path": str(work / "tuningd.db")},
        "vertex": {"endpoint": emu_url, "anonymous": True},
        # Generous budgets: a 429 is documented, but a run of 429s would test nothing else.
        "limits": {"requests_per_minute": 60_000, "creates_per_minute": 6_000},
        "logging": {"format": "json"}})
    emu = Proc([PYTHON, "-m", "tuningd.cli", "emulator", "--port", str(emu_port),
                "--job-seconds", "2", "--pending-seconds", "0.5"], work / "emulator.log")
    daemon = Proc([PYTHON, "-m", "tuningd.cli", "serve", "--config", str(work / "tuningd.toml")],
                  work / "daemon.log")
    started = time.monotonic()
    try:
        wait_for(lambda: http_status(emu_url + "/emulator/state") == 200, 30, "the emulator")
        wait_for(lambda: http_status(api_url + "/healthz") == 200, 30, "the daemon")
        proc = subprocess.run(schemathesis_argv(api_url, args, work / "report"),
                              capture_output=True, text=True, cwd=REPO, check=False,
                              timeout=args.timeout_s, env={**os.environ, "NO_COLOR": "1"})
    finally:
        daemon.stop()
        emu.stop()
    wall_s = time.monotonic() - started
    (work / "schemathesis.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    found = _CASES_RE.findall(proc.stdout)
    generated, passed, failed = (int(x or 0) for x in found[-1]) if found else (0, 0, 0)
    findings = log_findings(work / "daemon.log")
    ok = (proc.returncode == 0 and generated > 0 and not findings["tracebacks"]
          and not findings["server_errors"])
    return {
        "ok": ok, "schemathesis_exit": proc.returncode, "examples_per_operation": args.examples,
        "seed": args.seed, "cases_generated": generated, "cases_passed": passed,
        "cases_failed": failed, **findings, "wall_s": round(wall_s, 1), "workdir": str(work),
        "summary": _summary(proc.stdout),
    }


def _summary(stdout: str) -> str:
    marker = stdout.rfind("SUMMARY")
    return stdout[marker:] if marker >= 0 else stdout[-3000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=60,
                        help="schemathesis --max-examples per operation (default 60)")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--workdir", default=None, help="keep logs and reports here")
    parser.add_argument("--out", default=None, help="save the result as JSON")
    args = parser.parse_args()
    result = run(args)
    print(result.pop("summary"))
    print(json.dumps(result, indent=2))
    write_json(args.out, result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
