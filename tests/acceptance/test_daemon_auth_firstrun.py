"""Acceptance: service-account credentials against a strict-auth emulator; the README first run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    EXAMPLES,
    Proc,
    Processes,
    free_port,
    http,
    job_body,
    job_id_of,
    ok_json,
    run_cli,
    tuningd_argv,
    wait_until,
)

pytestmark = pytest.mark.acceptance

TOKEN_SECONDS = 4
JOB_SECONDS = 10


def _service_account_key(path: Path, token_uri: str) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {
        "type": "service_account",
        "project_id": "acc-proj",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": "tuningd-acc@acc-proj.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    return info


def test_service_account_tokens_are_refreshed_through_long_jobs(procs: Processes,
                                                                tmp_path: Path) -> None:
    """With a service-account key and a strict-auth emulator whose tokens live 4 s, two 10 s jobs
    succeed; every 401 the daemon got was recovered by a refresh and no token reaches the logs."""
    emu = procs.emulator(job_seconds=JOB_SECONDS, pending_seconds=0.5, max_concurrent=2,
                         extra=["--strict-auth", "--token-seconds", str(TOKEN_SECONDS)])
    key_path = tmp_path / "sa-key.json"
    info = _service_account_key(key_path, emu.url + "/token")
    daemon = procs.daemon(emu.url, {
        "vertex": {"anonymous": False, "credentials_file": str(key_path)},
        "limits": {"max_active": 2},
        "logging": {"level": "debug"},
    })
    ids = [job_id_of(daemon.submit(job_body(f"long-{i}"))) for i in range(2)]

    def all_succeeded() -> bool:
        states = daemon.states(ids)
        assert "JOB_STATE_FAILED" not in states.values(), daemon.list_all()
        return set(states.values()) == {"JOB_STATE_SUCCEEDED"} and len(states) == 2

    wait_until(all_succeeded, JOB_SECONDS + 25, interval_s=0.5,
               message=lambda: f"both jobs to succeed: {daemon.states(ids)}\n{procs.dump()}")

    state = emu.state()
    counts = state["requestCounts"]
    print("\nscenario 4 figures:", json.dumps({"tokens_issued": state["tokensIssued"],
                                              "request_counts": counts}))
    # Tokens lived 4 s and the jobs ran 10 s: the daemon must have fetched several.
    assert state["tokensIssued"] >= JOB_SECONDS // TOKEN_SECONDS, state["tokensIssued"]
    assert counts["token"].get("400", 0) == 0, counts
    unauthorized = sum(c.get("401", 0) for m, c in counts.items() if m != "token")
    # A 401 is tolerated only when a refresh recovered it: never more 401s than tokens issued
    # after the first, and every job still succeeded above.
    assert unauthorized <= state["tokensIssued"] - 1, counts
    assert sum(c.get("200", 0) for m, c in counts.items() if m != "token") > 0
    assert len(state["jobs"]) == 2

    assert daemon.stop() == 0
    logs = daemon.logs()
    assert "ya29." not in logs  # no Vertex access token in the daemon's output
    assert info["private_key"].splitlines()[1] not in logs  # nor any of the key


def test_readme_first_run_with_the_embedded_emulator(procs: Processes, tmp_path: Path) -> None:
    """`tuningd serve --emulator` as the README shows, then the basic example via plain HTTP and
    the advanced one via `tuningd submit`: both reach JOB_STATE_SUCCEEDED (`tuningd show`)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNINGD_")}
    env.update(TUNINGD_SERVER_PORT=str(port), TUNINGD_POLLING_INITIAL_INTERVAL_S="0.2",
               TUNINGD_POLLING_MAX_INTERVAL_S="1")
    daemon = procs.add(Proc("serve-emulator", tuningd_argv(
        "serve", "--emulator", "--emulator-job-seconds", "2",
        "--emulator-pending-seconds", "0.5"), tmp_path, env=env))
    daemon.start()

    def ready() -> bool:
        daemon.check_alive()
        return http("GET", url + "/readyz", timeout_s=2).status == 200

    wait_until(ready, 30, message=lambda: f"serve --emulator to be ready\n{daemon.tail()}")

    basic = ok_json(http(
        "POST", f"{url}/v1/projects/my-proj/locations/us-central1/tuningJobs",
        raw=(EXAMPLES / "request-basic.json").read_bytes()))
    assert basic["state"] == "JOB_STATE_QUEUED"
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("TUNINGD_")}
    submitted = run_cli("submit", "--server", url, "--project", "my-proj", "--json",
                        str(EXAMPLES / "request-advanced.json"), env=cli_env)
    assert submitted.returncode == 0, submitted.stderr
    advanced = json.loads(submitted.stdout)
    assert advanced["tunedModelDisplayName"] == "tuned_gemini_flash"

    def shown(job_id: str) -> dict[str, Any]:
        result = run_cli("show", "--server", url, "--json", job_id, env=cli_env)
        assert result.returncode == 0, result.stderr
        value: dict[str, Any] = json.loads(result.stdout)
        return value

    for job in (basic, advanced):
        job_id = job_id_of(job)
        wait_until(lambda job_id=job_id: shown(job_id)["state"] == "JOB_STATE_SUCCEEDED", 40,
                   interval_s=0.5,
                   message=lambda job_id=job_id: f"{job_id} to succeed\n{daemon.tail()}")
        final = shown(job_id)
        assert final["tunedModel"]["model"]
        assert [h["to"] for h in final["tuningd"]["history"]][-1] == "succeeded"
    daemon.check_alive()
    assert daemon.stop() == 0
