"""Process helpers for the daemon acceptance tests: real `tuningd` processes over real HTTP.

Everything here waits on conditions (`wait_until`), never on fixed sleeps. Each process writes its
stdout/stderr to files under the test's tmp_path, so failures can be diagnosed and logs grepped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PROJECT = "acc-proj"
LOCATION = "us-central1"
BASE_MODEL = "gemini-2.5-flash"
LABEL_JOB_ID = "tuningd-job-id"

T = TypeVar("T")


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0 and close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout_s: float, *, interval_s: float = 0.1,
               message: str | Callable[[], str] = "condition") -> T:
    """Poll `predicate` every `interval_s` until it returns something truthy; return that value.

    Exceptions raised by the predicate count as "not yet" (a process still starting, say); the
    last one is shown if the deadline passes."""
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # not ready yet; remembered for the failure message
            last_exc = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout_s:.1f}s waiting for {text}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval_s)


def job_body(display_name: str | None = None, **extra: Any) -> dict[str, Any]:
    """A minimal valid TuningJob create body."""
    body: dict[str, Any] = {
        "baseModel": BASE_MODEL,
        "supervisedTuningSpec": {"trainingDatasetUri": "gs://acc-bucket/train.jsonl"},
    }
    if display_name is not None:
        body["tunedModelDisplayName"] = display_name
    body.update(extra)
    return body


# --------------------------------------------------------------------------------------------
# HTTP


class Response:
    """Status, headers and decoded JSON (None when the body is not JSON) of one HTTP exchange."""

    def __init__(self, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = dict(headers)
        self.raw = raw
        try:
            self.json: Any = json.loads(raw) if raw.strip() else None
        except ValueError:
            self.json = None

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.raw[:300]!r})"


def http(method: str, url: str, *, body: Any = None, raw: bytes | None = None,
         token: str | None = None, headers: Mapping[str, str] | None = None,
         timeout_s: float = 15.0) -> Response:
    """One plain urllib request; 4xx/5xx answers are returned, not raised."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = {"Accept": "application/json"}
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return Response(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.headers, exc.read())


def ok_json(resp: Response) -> Any:
    assert 200 <= resp.status < 300, resp
    return resp.json


# --------------------------------------------------------------------------------------------
# Processes


class Proc:
    """One child process whose stdout/stderr go to files (appended across restarts)."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.env = dict(os.environ if env is None else env)
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} is running"
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=err, env=self.env,
                                          cwd=str(REPO), stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.popen.returncode if self.popen else None
            raise AssertionError(f"{self.name} exited with {code}:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return self.popen.returncode

    def logs(self) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "\n".join(parts)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])


def tuningd_argv(*args: str) -> list[str]:
    """Run the package's CLI with this interpreter, so it works in any venv."""
    return [sys.executable, "-m", "tuningd.cli", *args]


class EmulatorProc(Proc):
    """`tuningd emulator` on a free port."""

    def __init__(self, log_dir: Path, *, job_seconds: float = 2.0, pending_seconds: float = 0.5,
                 max_concurrent: int = 2, extra: Sequence[str] = (), name: str = "emulator"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = tuningd_argv(
            "emulator", "--port", str(self.port), "--job-seconds", str(job_seconds),
            "--pending-seconds", str(pending_seconds), "--max-concurrent", str(max_concurrent),
            *extra)
        super().__init__(name, argv, log_dir)

    def start(self) -> None:
        super().start()
        wait_until(self._answers, 20, message=lambda: f"emulator to answer\n{self.tail()}")

    def _answers(self) -> bool:
        self.check_alive()
        return http("GET", self.url + "/emulator/state", timeout_s=2).status == 200

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = ok_json(http("GET", self.url + "/emulator/state"))
        return result

    def set_faults(self, faults: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = ok_json(http("POST", self.url + "/emulator/faults",
                                              body=dict(faults)))
        return result

    def create_count(self) -> int:
        """Jobs the emulator really created (including ones whose reply was lost)."""
        return len(self.state()["jobs"])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {value!r} as TOML")


def write_toml(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> None:
    lines: list[str] = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in keys.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def daemon_config(tmp_path: Path, emulator_url: str,
                  overrides: Mapping[str, Mapping[str, Any]] | None = None,
                  ) -> dict[str, dict[str, Any]]:
    """The acceptance-test daemon config: fast polling, small backoffs, JSON logs."""
    sections: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": free_port(), "drain_timeout_s": 2.0},
        "store": {"path": str(tmp_path / "tuningd.db")},
        "vertex": {"endpoint": emulator_url, "anonymous": True, "request_timeout_s": 10.0},
        "limits": {"max_active": 2, "requests_per_minute": 6000, "creates_per_minute": 600},
        "polling": {"initial_interval_s": 0.2, "max_interval_s": 1.0},
        # Absent 12 s after a failed create (10 s timeout + lag + two more lists), not 5 min.
        "reconcile": {"list_lag_s": 0.5, "confirm_spacing_s": 0.5, "not_found_confirm_s": 0.5},
        "sweep": {"interval_s": 2.0},
        "retry": {"base_s": 0.2, "cap_s": 2.0},
        "logging": {"format": "json", "level": "info"},
    }
    for section, keys in (overrides or {}).items():
        sections.setdefault(section, {}).update(keys)
    return sections


class DaemonProc(Proc):
    """`tuningd serve --config FILE`; restartable with the same config and database."""

    def __init__(self, tmp_path: Path, emulator_url: str,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 name: str = "daemon", env: Mapping[str, str] | None = None) -> None:
        self.config = daemon_config(tmp_path, emulator_url, overrides)
        self.config_path = tmp_path / f"{name}.toml"
        write_toml(self.config_path, self.config)
        self.url = f"http://127.0.0.1:{self.config['server']['port']}"
        token_file = self.config["server"].get("token_file")
        self.token = Path(token_file).read_text().strip() if token_file else None
        clean_env = {k: v for k, v in (os.environ if env is None else env).items()
                     if not k.startswith("TUNINGD_")}
        super().__init__(name, tuningd_argv("serve", "--config", str(self.config_path)),
                         tmp_path, env=clean_env)

    def start(self, timeout_s: float = 30.0) -> None:
        super().start()
        wait_until(self._ready, timeout_s, message=lambda: f"daemon to be ready\n{self.tail()}")

    def _ready(self) -> bool:
        self.check_alive()
        return http("GET", self.url + "/readyz", timeout_s=2).status == 200

    def restart(self) -> None:
        self.kill()
        self.start()

    # ------------------------------------------------------------------ API

    def collection_url(self, project: str = PROJECT, location: str = LOCATION,
                       version: str = "v1") -> str:
        return f"{self.url}/{version}/projects/{project}/locations/{location}/tuningJobs"

    def call(self, method: str, path_or_url: str, **kw: Any) -> Response:
        url = path_or_url if path_or_url.startswith("http") else self.url + path_or_url
        kw.setdefault("token", self.token)
        return http(method, url, **kw)

    def submit(self, body: Mapping[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        resp = self.call("POST", self.collection_url(), body=dict(body or job_body()), **kw)
        result: dict[str, Any] = ok_json(resp)
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = ok_json(self.call("GET", f"{self.collection_url()}/{job_id}"))
        return result

    def cancel(self, job_id: str) -> Response:
        return self.call("POST", f"{self.collection_url()}/{job_id}:cancel", body={})

    def list_all(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        token = ""
        while True:
            query = "?pageSize=100" + (f"&pageToken={token}" if token else "")
            page = ok_json(self.call("GET", self.collection_url() + query))
            jobs.extend(page.get("tuningJobs") or [])
            token = page.get("nextPageToken") or ""
            if not token:
                return jobs

    def states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Vertex state of each job, read through one listing."""
        wanted = set(job_ids)
        return {j["name"].rsplit("/", 1)[-1]: j["state"] for j in self.list_all()
                if j["name"].rsplit("/", 1)[-1] in wanted}

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON log line the daemon wrote so far."""
        records = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    records.append(value)
        return records


def job_id_of(job: Mapping[str, Any]) -> str:
    return str(job["name"]).rsplit("/", 1)[-1]


def remote_jobs_by_label(state: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Emulator jobs grouped by their tuningd-job-id label (from the stored request body)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for job in state["jobs"]:
        labels = (job.get("request") or {}).get("labels") or {}
        grouped.setdefault(str(labels.get(LABEL_JOB_ID)), []).append(job)
    return grouped


class Processes:
    """Every process a test starts; all are killed at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []

    def emulator(self, **kw: Any) -> EmulatorProc:
        emu = EmulatorProc(self.tmp_path, **kw)
        self.procs.append(emu)
        emu.start()
        return emu

    def daemon(self, emulator_url: str, overrides: Mapping[str, Mapping[str, Any]] | None = None,
               *, start: bool = True, **kw: Any) -> DaemonProc:
        daemon = DaemonProc(self.tmp_path, emulator_url, overrides, **kw)
        self.procs.append(daemon)
        if start:
            daemon.start()
        return daemon

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.kill()

    def dump(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.tail(60)}" for p in self.procs)


@contextlib.contextmanager
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


def run_cli(*args: str, env: Mapping[str, str] | None = None,
            timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """One client CLI command (`tuningd submit|show|cancel ...`), its output captured."""
    full_env = dict(os.environ if env is None else env)
    return subprocess.run(tuningd_argv(*args), capture_output=True, text=True,
                          timeout=timeout_s, env=full_env, cwd=str(REPO), check=False)
