"""The installed command line: `tuningd --help` and the standalone `tuningd emulator` process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

COMMANDS = ("serve", "emulator", "submit", "list", "show", "cancel", "wait", "watch", "status",
            "config", "store")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_help_lists_every_command() -> None:
    """`tuningd --help` names every command a user can run."""
    out = subprocess.run([sys.executable, "-m", "tuningd.cli", "--help"], check=True,
                         capture_output=True, text=True).stdout
    for command in COMMANDS:
        assert f"    {command} " in out or f"    {command}\n" in out, command


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log_file = (tmp_path / "emulator.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuningd.cli", "emulator", "--port", str(port),
         "--job-seconds", "0.5", "--pending-seconds", "0.1"],
        stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url + "/emulator/state")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log_file.close()


def _call(url: str, method: str = "GET",
          body: object | None = None) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_standalone_emulator_serves_a_job_to_success(emulator_process: str) -> None:
    """`tuningd emulator --port P` serves create and get, and a job reaches SUCCEEDED."""
    base = f"{emulator_process}/v1/projects/my-proj/locations/us-central1/tuningJobs"
    body = json.loads((Path(__file__).parents[2] / "examples" / "request-basic.json").read_text())
    status, job = _call(base, "POST", body)
    assert status == 200 and job["state"] == "JOB_STATE_PENDING"
    name = str(job["name"])
    assert name.startswith("projects/123456789012/locations/us-central1/tuningJobs/")
    deadline = time.monotonic() + 20
    while job.get("state") != "JOB_STATE_SUCCEEDED":
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
        status, job = _call(f"{emulator_process}/v1/{name}")
    assert "tunedModel" in job


def test_standalone_emulator_answers_errors_in_googles_envelope(emulator_process: str) -> None:
    """A create without a training dataset gets 400 INVALID_ARGUMENT in Google's envelope."""
    base = f"{emulator_process}/v1/projects/my-proj/locations/us-central1/tuningJobs"
    status, body = _call(base, "POST", {"baseModel": "gemini-2.5-flash"})
    assert status == 400
    error = body["error"]
    assert isinstance(error, dict)
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400 and error["message"]


def test_standalone_emulator_takes_the_fault_flags(tmp_path: Path) -> None:
    """`tuningd emulator` with --late-create-*, --list-lag-s and --error-rule injects those
    faults from the first request: the create lands late, lists lag, the rule answers."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "emulator.log").open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuningd.cli", "emulator", "--port", str(port),
             "--manual-clock", "--late-create-rate", "1", "--late-create-delay-s", "30",
             "--list-lag-s", "5", "--error-rule", "list:*/europe-west4:403:1:SERVICE_DISABLED"],
            stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _wait_for(url + "/emulator/state")
            parent = f"{url}/v1/projects/my-proj/locations"
            body = json.loads((Path(__file__).parents[2] / "examples" /
                               "request-basic.json").read_text())
            body["labels"] = {"tuningd-job-id": "cli-late"}
            with pytest.raises((urllib.error.URLError, ConnectionError)):
                _call(f"{parent}/us-central1/tuningJobs", "POST", body)
            _, state = _call(url + "/emulator/state")
            pending = state["pendingCreates"]
            assert isinstance(pending, list) and pending[0]["labels"] == body["labels"]
            _call(url + "/emulator/advance", "POST", {"seconds": 30})
            assert _call(f"{parent}/us-central1/tuningJobs") == (200, {})  # lagging 5 s
            _call(url + "/emulator/advance", "POST", {"seconds": 5})
            status, page = _call(f"{parent}/us-central1/tuningJobs")
            assert status == 200 and len(page["tuningJobs"]) == 1
            status, refused = _call(f"{parent}/europe-west4/tuningJobs")
            assert status == 403
            assert refused["error"]["details"][0]["reason"] == "SERVICE_DISABLED"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_standalone_emulator_refuses_a_bad_error_rule() -> None:
    """A malformed --error-rule stops `tuningd emulator` with exit code 2 before it serves."""
    done = subprocess.run([sys.executable, "-m", "tuningd.cli", "emulator", "--port", "0",
                           "--error-rule", "create:my-proj:418"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--error-rule" in done.stdout + done.stderr


def test_serve_on_a_port_in_use_says_so_without_a_traceback(tmp_path: Path) -> None:
    """`tuningd serve` on a port another program holds exits 2 with one line naming the port."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tuningd.cli", "serve", "--emulator"], cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "TUNINGD_SERVER_PORT": str(port),
                 "TUNINGD_SERVER_HOST": "127.0.0.1"},
            capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr


def test_the_emulator_section_starts_the_embedded_emulator_where_it_says(tmp_path: Path) -> None:
    """`[emulator] enabled = true` runs `serve` on the embedded emulator (no --emulator flag),
    listening on `[emulator] port`."""
    api_port, emu_port = _free_port(), _free_port()
    env = {"PATH": "/usr/bin:/bin", "TUNINGD_SERVER_PORT": str(api_port),
           "TUNINGD_EMULATOR_ENABLED": "true", "TUNINGD_EMULATOR_PORT": str(emu_port),
           "TUNINGD_STORE_PATH": str(tmp_path / "tuningd.db")}
    proc = subprocess.Popen([sys.executable, "-m", "tuningd.cli", "serve"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(f"http://127.0.0.1:{api_port}/readyz")
        status, listed = _call(
            f"http://127.0.0.1:{emu_port}/v1/projects/my-project/locations/us-central1/tuningJobs")
        assert status == 200 and listed == {}, listed
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_a_reader_that_leaves_ends_the_command_quietly(tmp_path: Path) -> None:
    """`tuningd config | head -0`: the closed pipe ends the command with 141 and no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "tuningd.cli", "config"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command writes a byte
    assert proc.wait(timeout=30) == 141
    assert proc.stderr.read() == b""


def test_serve_flags_name_the_port_and_the_store(tmp_path: Path) -> None:
    """`serve --emulator --port P --store FILE` listens on P and keeps its jobs in FILE (not in a
    temporary directory); a port out of range is refused like the config key it stands for."""
    port, db = _free_port(), tmp_path / "kept.db"
    proc = subprocess.Popen([sys.executable, "-m", "tuningd.cli", "serve", "--emulator",
                             "--host", "127.0.0.1", "--port", str(port), "--store", str(db)],
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(f"http://127.0.0.1:{port}/readyz")
        assert db.exists()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    assert db.exists()
    done = subprocess.run([sys.executable, "-m", "tuningd.cli", "serve", "--port", "70000"],
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "server.port" in done.stderr, done.stderr


def test_the_demo_polls_on_the_emulators_scale_and_shows_a_job_running(tmp_path: Path) -> None:
    """`serve --emulator` without a config polls on the scale of the emulated job length (and
    says so at start), so a job is seen running, with a sub-state, before it succeeds."""
    port, log_path = _free_port(), tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "tuningd.cli", "serve", "--emulator",
                                 "--port", str(port), "--emulator-job-seconds", "4"],
                                cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, stdout=log_file,
                                stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(base + "/readyz")
        body = json.loads((Path(__file__).resolve().parents[2] / "examples"
                           / "request-basic.json").read_text())
        status, job = _call(f"{base}/v1beta1/projects/my-proj/locations/us-central1/tuningJobs",
                            "POST", body)
        assert status == 200, job
        seen: list[tuple[object, object]] = []
        deadline = time.monotonic() + 30
        while not seen or seen[-1][0] != "JOB_STATE_SUCCEEDED":
            assert time.monotonic() < deadline, seen
            _, now = _call(f"{base}/v1beta1/{job['name']}")
            if not seen or seen[-1] != (now["state"], now.get("tuningJobState")):
                seen.append((now["state"], now.get("tuningJobState")))
            time.sleep(0.1)
        assert any(state == "JOB_STATE_RUNNING" and sub for state, sub in seen), seen
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    embedded = next(json.loads(line) for line in log_path.read_text().splitlines()
                    if '"emulator.embedded"' in line)
    assert embedded["polling_initial_interval_s"] == 0.2
