"""Acceptance: a daemon that cannot work says why, at start in its log and on the job in the API."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import Processes, free_port, job_body, job_id_of, run_cli, wait_until

pytestmark = pytest.mark.acceptance


def _without_credentials(tmp_path: Path) -> dict[str, str]:
    """An environment in which Application Default Credentials find nothing, quickly."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG")}
    env.update(HOME=str(home), CLOUDSDK_CONFIG=str(home / "gcloud"), NO_GCE_CHECK="true",
               GCE_METADATA_HOST=f"127.0.0.1:{free_port()}",
               GCE_METADATA_IP=f"127.0.0.1:{free_port()}")
    return env


def _warnings(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event") == event and r.get("level") == "warning"]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_no_credentials_is_one_warning_and_the_jobs_reason(procs: Processes,
                                                             tmp_path: Path) -> None:
    """With no usable credentials the daemon still starts and is ready, logs one WARNING with
    the fix, and its queued job shows lastError UNAUTHENTICATED and a later nextAttemptTime in
    the API, in `tuningd show` and `tuningd list`, and on the status page."""
    emu = procs.emulator()
    daemon = procs.daemon(emu.url, {"vertex": {"anonymous": False}},
                          env=_without_credentials(tmp_path))
    job_id = job_id_of(daemon.submit(job_body("no-creds")))

    def reason() -> Mapping[str, Any] | None:
        ext: dict[str, Any] = daemon.job(job_id)["tuningd"]
        return ext if "lastError" in ext and "nextAttemptTime" in ext else None

    ext = wait_until(reason, 30, interval_s=0.2,
                     message=lambda: f"the job's reason\n{daemon.tail()}")
    assert ext["state"] == "queued"
    error = ext["lastError"]
    assert (error["code"], error["status"]) == (16, "UNAUTHENTICATED")
    assert "no usable Google credentials" in error["message"]
    assert _time(ext["nextAttemptTime"]) > _time(error["time"])
    assert emu.create_count() == 0
    # The same reason where a person looks: `show` (by an id prefix), `list`, the status page.
    cli_env = {**os.environ, "TUNINGD_URL": daemon.url, "COLUMNS": "200"}
    shown = run_cli("show", job_id[:8], env=cli_env)
    assert shown.returncode == 0 and "UNAUTHENTICATED" in shown.stdout, shown
    assert "no usable Google credentials" in shown.stdout
    listed = run_cli("list", "--project", "acc-proj", env=cli_env)
    assert listed.returncode == 0 and "UNAUTHENTICATED" in listed.stdout, listed
    page = daemon.call("GET", "/v1/tuningd/status.html")
    assert page.status == 200 and b"UNAUTHENTICATED" in page.raw
    warned = wait_until(lambda: _warnings(daemon.log_records(), "vertex.credentials_missing"),
                        30, message=lambda: f"the credentials warning\n{daemon.tail()}")
    assert len(warned) == 1
    assert "gcloud auth application-default login" in warned[0]["fix"]
    assert "vertex.credentials_file" in warned[0]["fix"]
    assert "vertex.anonymous = true" in warned[0]["fix"]
    assert not _warnings(daemon.log_records(), "vertex.endpoint_unreachable")
    assert daemon.call("GET", "/readyz").status == 200
    assert daemon.stop() == 0


def test_unreachable_endpoint_is_one_warning_naming_it(procs: Processes) -> None:
    """A daemon whose vertex.endpoint answers nothing starts, is ready, and logs one WARNING
    naming the endpoint and the config key to fix."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    daemon = procs.daemon(endpoint)
    warned = wait_until(lambda: _warnings(daemon.log_records(), "vertex.endpoint_unreachable"),
                        30, message=lambda: f"the endpoint warning\n{daemon.tail()}")
    assert len(warned) == 1
    assert endpoint in warned[0]["error"]
    assert "vertex.endpoint" in warned[0]["fix"]
    assert not _warnings(daemon.log_records(), "vertex.credentials_missing")  # anonymous
    assert daemon.call("GET", "/readyz").status == 200
    assert daemon.stop() == 0
