"""Acceptance: `serve --emulator --state-dir DIR` keeps the database and the emulator's jobs
across a stop or a kill -9; without it the start-up says state is temporary and it is deleted."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    LABEL_JOB_ID,
    Proc,
    Processes,
    free_port,
    http,
    job_body,
    job_id_of,
    ok_json,
    remote_jobs_by_label,
    tuningd_argv,
    wait_until,
)

pytestmark = pytest.mark.acceptance

JOB_SECONDS = 3
COLLECTION = "/v1/projects/my-proj/locations/us-central1/tuningJobs"


class Demo:
    """One `tuningd serve --emulator` process with fixed ports, restartable."""

    def __init__(self, procs: Processes, tmp_path: Path, *extra: str,
                 env_extra: dict[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.emulator_url = f"http://127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUNINGD_")}
        env.update(TUNINGD_SERVER_PORT=self.url.rsplit(":", 1)[1],
                   TUNINGD_EMULATOR_PORT=self.emulator_url.rsplit(":", 1)[1],
                   TUNINGD_LIMITS_MAX_ACTIVE="2", **(env_extra or {}))
        self.proc = procs.add(Proc("serve-emulator", tuningd_argv(
            "serve", "--emulator", "--emulator-job-seconds", str(JOB_SECONDS),
            "--emulator-pending-seconds", "0.5", "--emulator-max-concurrent", "2", *extra),
            tmp_path, env=env))

    def start(self) -> None:
        self.proc.start()

        def ready() -> bool:
            self.proc.check_alive()
            return http("GET", self.url + "/readyz", timeout_s=2).status == 200

        wait_until(ready, 30, message=lambda: f"serve --emulator to be ready\n{self.proc.tail()}")

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = ok_json(http("GET", f"{self.url}{COLLECTION}/{job_id}"))
        return result

    def states(self, ids: list[str]) -> dict[str, str]:
        return {job_id: self.job(job_id)["state"] for job_id in ids}

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.proc.logs().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_jobs_in_flight_survive_a_restart_with_a_state_dir(procs: Processes, tmp_path: Path,
                                                           stop: str) -> None:
    """Three jobs, one running when the daemon is stopped (or killed); started again on the same
    directory, the same jobs are there, none is lost, and each succeeds with one remote job."""
    state_dir = tmp_path / "state"
    demo = Demo(procs, tmp_path, "--state-dir", str(state_dir))
    demo.start()
    ids = [job_id_of(ok_json(http("POST", demo.url + COLLECTION, body=job_body(f"keep-{i}"))))
           for i in range(3)]
    wait_until(lambda: "JOB_STATE_RUNNING" in demo.states(ids).values(), 30, interval_s=0.2,
               message=lambda: f"a job to run: {demo.states(ids)}\n{demo.proc.tail()}")
    before = demo.states(ids)
    assert "JOB_STATE_SUCCEEDED" not in before.values(), before  # still in flight at the stop
    if stop == "sigterm":
        assert demo.proc.stop() == 0
    else:
        demo.proc.kill()
    assert (state_dir / "tuningd.db").is_file()
    saved = json.loads((state_dir / "emulator.json").read_text())  # whole, even after kill -9
    assert saved["jobs"], saved

    demo.start()
    assert {job_id_of(j) for j in ok_json(http("GET", demo.url + COLLECTION))["tuningJobs"]} \
        == set(ids)

    def all_succeeded() -> bool:
        states = demo.states(ids)
        assert "JOB_STATE_FAILED" not in states.values(), [demo.job(i) for i in ids]
        return set(states.values()) == {"JOB_STATE_SUCCEEDED"}

    wait_until(all_succeeded, 60, interval_s=0.5,
               message=lambda: f"every job to succeed: {demo.states(ids)}\n{demo.proc.tail()}")
    remote = remote_jobs_by_label(ok_json(http("GET", demo.emulator_url + "/emulator/state")))
    assert {label: len(jobs) for label, jobs in remote.items()} == dict.fromkeys(ids, 1)
    assert "remote job lost" not in demo.proc.logs()
    assert all(j["request"]["labels"][LABEL_JOB_ID] in ids for jobs in remote.values()
               for j in jobs)
    assert demo.proc.stop() == 0


def test_without_a_state_dir_state_is_said_to_be_temporary_and_deleted(
        procs: Processes, tmp_path: Path) -> None:
    """`serve --emulator` alone warns at start that its state is temporary, and the temporary
    directory holding the database is gone once it stopped."""
    demo = Demo(procs, tmp_path)
    demo.start()
    warning = next(r for r in demo.records() if r.get("event") == "state.not_persisted")
    assert warning["level"] == "warning"
    assert "state is temporary" in warning["hint"] and "--state-dir" in warning["hint"]
    temp_dir = Path(warning["dir"])
    assert (temp_dir / "tuningd.db").is_file()
    embedded = next(r for r in demo.records() if r.get("event") == "emulator.embedded")
    assert embedded["state"].startswith("temporary, deleted on stop")
    assert demo.proc.stop() == 0
    assert not temp_dir.exists()
    assert any(r.get("event") == "state.deleted" for r in demo.records())


def test_the_state_dir_setting_alone_keeps_the_database_beside_the_jobs(
        procs: Processes, tmp_path: Path) -> None:
    """emulator.state_dir (here from the environment) without a store setting puts the database
    in that directory too, and nothing is said to be temporary."""
    state_dir = tmp_path / "by-setting"
    demo = Demo(procs, tmp_path, env_extra={"TUNINGD_EMULATOR_STATE_DIR": str(state_dir)})
    demo.start()
    embedded = next(r for r in demo.records() if r.get("event") == "emulator.embedded")
    assert embedded["store"] == str(state_dir / "tuningd.db")
    assert embedded["state"] == str(state_dir)
    assert not any("not_persisted" in str(r.get("event")) for r in demo.records())
    assert demo.proc.stop() == 0
    assert (state_dir / "tuningd.db").is_file() and (state_dir / "emulator.json").is_file()


def test_state_dir_without_the_emulator_is_refused(tmp_path: Path) -> None:
    """--state-dir names the embedded emulator's state: without --emulator it is an error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNINGD_")}
    result = subprocess.run(tuningd_argv("serve", "--state-dir", str(tmp_path)),
                            capture_output=True, text=True, timeout=30, env=env, check=False)
    assert result.returncode == 2
    assert "use it with --emulator" in result.stderr


def test_the_standalone_emulator_keeps_its_jobs_and_its_directory(procs: Processes,
                                                                  tmp_path: Path) -> None:
    """`tuningd emulator --state-dir DIR`: a job outlives a restart, and a second emulator on
    the same directory is refused while the first runs."""
    state_dir = tmp_path / "emu-state"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = tuningd_argv("emulator", "--port", str(port), "--job-seconds", "60",
                        "--pending-seconds", "0", "--state-dir", str(state_dir))
    first = procs.add(Proc("emulator", argv, tmp_path))
    first.start()
    wait_until(lambda: http("GET", url + "/emulator/state").status == 200, 30,
               message=lambda: first.tail())
    name = ok_json(http("POST", url + COLLECTION, body=job_body("standalone")))["name"]
    second = subprocess.run(
        tuningd_argv("emulator", "--port", str(free_port()), "--state-dir", str(state_dir)),
        capture_output=True, text=True, timeout=30, check=False)
    assert second.returncode == 1
    assert "another running emulator" in second.stdout + second.stderr
    assert first.stop() == 0
    first.start()
    wait_until(lambda: http("GET", url + "/emulator/state").status == 200, 30,
               message=lambda: first.tail())
    assert ok_json(http("GET", f"{url}/v1/{name}"))["state"] == "JOB_STATE_RUNNING"
    assert first.stop() == 0
