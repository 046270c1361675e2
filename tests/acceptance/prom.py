"""A real Prometheus for acceptance tests: start on a free port, set scrape targets, query, wait."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

Result = list[dict[str, Any]]


class PrometheusError(RuntimeError):
    pass


def find_prometheus() -> str | None:
    """Path of the prometheus binary, or None (callers skip, or fail when CI=true)."""
    return shutil.which("prometheus")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nonempty(result: Result) -> bool:
    return len(result) > 0


def value_is(pred: Callable[[float], bool]) -> Callable[[Result], bool]:
    """wait_for predicate: some sample's value satisfies `pred` (NaN never does)."""

    def check(result: Result) -> bool:
        for sample in result:
            v = float(sample["value"][1])
            if not math.isnan(v) and pred(v):
                return True
        return False

    return check


class Prometheus:
    """One prometheus process with file-based service discovery, so targets can change live.

    Usage (session-scoped is best: the first scrape lands ~6 s after a target appears):

        prom = Prometheus(tmp_dir, rule_files=[rules_path])
        prom.start()
        prom.set_targets("tuningd", ["127.0.0.1:8470"])
        prom.wait_for('up{job="tuningd"} == 1')
        prom.query("tuningd_jobs")
        prom.stop()
    """

    def __init__(
        self,
        workdir: Path,
        *,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        rule_files: Sequence[Path] = (),
        binary: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.binary = binary or find_prometheus()
        if self.binary is None:
            raise PrometheusError("prometheus binary not found (apt-get install prometheus)")
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._jobs: set[str] = set()
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def _sd_path(self, job: str) -> Path:
        return self.workdir / "sd" / f"{job}.json"

    def _write_config(self, jobs: Iterable[str]) -> Path:
        scrape_configs = [
            {
                "job_name": job,
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "file_sd_configs": [{"files": [str(self._sd_path(job))], "refresh_interval": "1s"}],
            }
            for job in sorted(jobs)
        ]
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": scrape_configs,
        }
        path = self.workdir / "prometheus.yml"
        # JSON is valid YAML, so no YAML library is needed.
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, jobs: Iterable[str] = ("tuningd",), timeout: float = 30.0) -> None:
        """Start with one file_sd scrape job per name in `jobs` (targets empty until set)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "sd").mkdir(exist_ok=True)
        self._jobs = set(jobs)
        for job in self._jobs:
            if not self._sd_path(job).exists():
                self._sd_path(job).write_text("[]")
        config = self._write_config(self._jobs)
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
            log.close()
            try:
                self._wait_ready(timeout)
                return
            except PrometheusError as exc:
                last_error = str(exc)
                self.stop()
        raise PrometheusError(f"prometheus did not start: {last_error}\n{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise PrometheusError("prometheus exited")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise PrometheusError("prometheus not ready in time")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- targets -----------------------------------------------------------------------------

    def set_targets(
        self, job: str, targets: Sequence[str], labels: Mapping[str, str] | None = None
    ) -> None:
        """Replace the scrape targets ("host:port") of a job given to start()."""
        if job not in self._jobs:
            raise PrometheusError(f"job {job!r} was not configured at start()")
        path = self._sd_path(job)
        tmp = path.with_suffix(".tmp")
        # Atomic rename, so file SD never reads a half-written file.
        tmp.write_text(json.dumps([{"targets": list(targets), "labels": dict(labels or {})}]))
        os.replace(tmp, path)

    def reload(self) -> None:
        self._request("/-/reload", data=b"")

    # -- HTTP API ----------------------------------------------------------------------------

    def _request(self, path: str, params: Mapping[str, str] | None = None,
                 data: bytes | None = None) -> Any:  # fmt: skip
        url = self.url + path
        body = data
        if params is not None:
            body = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            with contextlib.suppress(ValueError):
                payload = json.loads(raw)
                raise PrometheusError(f"{path}: {payload.get('error', raw)!r}") from exc
            raise PrometheusError(f"{path}: HTTP {exc.code}: {raw[:300]!r}") from exc
        return json.loads(raw) if raw else None

    def query_raw(self, expr: str, at: float | None = None) -> dict[str, Any]:
        params = {"query": expr}
        if at is not None:
            params["time"] = repr(at)
        payload: dict[str, Any] = self._request("/api/v1/query", params)
        return payload

    def query(self, expr: str, at: float | None = None) -> Result:
        """Instant query; raises PrometheusError unless status is success. Vector results."""
        payload = self.query_raw(expr, at)
        if payload.get("status") != "success":
            raise PrometheusError(f"query {expr!r} failed: {payload}")
        data = payload["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: Result = data["result"]
        return result

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[Result], bool] = nonempty,
        timeout: float = 60.0,
        interval: float = 0.25,
    ) -> Result:
        """Poll `expr` until `predicate(result)` holds; on timeout raise with the last result."""
        deadline = time.monotonic() + timeout
        last: Result | str = []
        while True:
            try:
                last = self.query(expr)
                if predicate(last):
                    return last
            except PrometheusError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise PrometheusError(
                    f"timeout waiting for {expr!r}; last: {last}\n{self.log_tail()}"
                )
            time.sleep(interval)

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._request("/api/v1/targets")["data"]["activeTargets"]
        return active

    def rules(self) -> list[dict[str, Any]]:
        """Every rule of every group, as /api/v1/rules reports it (health, lastError, ...)."""
        groups = self._request("/api/v1/rules")["data"]["groups"]
        return [rule for g in groups for rule in g["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._request("/api/v1/alerts")["data"]["alerts"]
        return active
