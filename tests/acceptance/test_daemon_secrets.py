"""Acceptance: secrets and permissions of a real `tuningd serve` (issue 9, finding 5)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import (
    Processes,
    daemon_config,
    http,
    job_body,
    job_id_of,
    tuningd_argv,
    wait_until,
    write_toml,
)

pytestmark = pytest.mark.acceptance


def _serve_exit(tmp_path: Path, overrides: dict[str, dict[str, Any]]) -> tuple[int, str]:
    """Run `tuningd serve` with a config that must be refused; its exit code and stderr."""
    config = daemon_config(tmp_path, "http://127.0.0.1:9", overrides)
    path = tmp_path / "refused.toml"
    write_toml(path, config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNINGD_")}
    done = subprocess.run(tuningd_argv("serve", "--config", str(path)), capture_output=True,
                          text=True, timeout=60, env=env, check=False)
    return done.returncode, done.stderr


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_exposed_server_token_file_stops_the_start(tmp_path: Path, mode: int) -> None:
    """A server.token_file group or others can read stops `tuningd serve` with exit 2 and a
    one-line message naming the key and the chmod, without the token (main accepted it)."""
    token = "tok-" + secrets.token_urlsafe(24)
    token_file = tmp_path / "api-token"
    token_file.write_text(token + "\n")
    token_file.chmod(mode)
    code, err = _serve_exit(tmp_path, {"server": {"token_file": str(token_file)}})
    assert code == 2, err
    assert f"config key server.token_file: {token_file} is accessible by group or others" in err
    assert f"chmod 600 {token_file}" in err
    assert token not in err
    assert not (tmp_path / "tuningd.db").exists()


def test_non_loopback_host_without_token_stops_the_start(tmp_path: Path) -> None:
    """server.host = 0.0.0.0 without a token is refused with exit 2 and the ways out; with
    allow_insecure it starts and answers (main served every interface without a word)."""
    code, err = _serve_exit(tmp_path, {"server": {"host": "0.0.0.0"}})
    assert code == 2, err
    assert "config key server.host: '0.0.0.0' is reachable from other machines" in err
    assert "server.allow_insecure = true" in err


def test_non_loopback_host_with_allow_insecure_starts(procs: Processes) -> None:
    """server.allow_insecure = true lets a deliberate all-interfaces listener start."""
    emu = procs.emulator()
    daemon = procs.daemon(emu.url, {"server": {"host": "0.0.0.0", "allow_insecure": True}})
    assert http("GET", daemon.url + "/healthz").status == 200


def _unix_get(path: Path, target: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_api_socket_is_owner_only_under_umask_000(procs: Processes, tmp_path: Path) -> None:
    """Started with umask 000, the daemon's unix socket is 0600 and serves its owner (main made
    it 0777: any local user could create and cancel jobs)."""
    emu = procs.emulator()
    sock_path = tmp_path / "api.sock"
    daemon = procs.daemon(emu.url, {"server": {"socket": str(sock_path)}}, start=False)
    # The shell sets the umask the daemon inherits; exec keeps the pid the helper kills.
    daemon.argv = ["/bin/sh", "-c", 'umask 000 && exec "$@"', "sh", *daemon.argv]
    daemon.start()
    mode = sock_path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600, oct(mode)
    assert _unix_get(sock_path, "/healthz").split(b"\r\n")[0].endswith(b" 200 OK")


# --------------------------------------------------------------------------------------------
# Nothing secret in the logs


class EchoTokenEndpoint:
    """An OAuth token endpoint that refuses every grant and echoes the form it was sent.

    It cycles through three refusals: 400 with Google's JSON error and the form in the
    description, 401 with the form as plain text, and 403 with the form as the error code."""

    def __init__(self) -> None:
        self.forms: list[str] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                with endpoint._lock:
                    endpoint.forms.append(form)
                    turn = len(endpoint.forms) % 3
                if turn == 1:
                    status, ctype = 400, "application/json"
                    body = json.dumps({"error": "invalid_grant", "error_description": form,
                                       "echo": urllib.parse.parse_qs(form)})
                elif turn == 2:
                    status, ctype, body = 401, "text/plain", form
                else:
                    status, ctype = 403, "application/json"
                    body = json.dumps({"error": form})
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep the test's output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EchoTokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def assertions(self) -> list[str]:
        with self._lock:
            forms = list(self.forms)
        return [value for form in forms
                for value in urllib.parse.parse_qs(form).get("assertion", [])]


@pytest.fixture
def echo_endpoint() -> Iterator[EchoTokenEndpoint]:
    with EchoTokenEndpoint() as endpoint:
        yield endpoint


def _service_account_key(tmp_path: Path, token_uri: str) -> tuple[Path, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "acc-proj",
        "private_key_id": "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7",
        "private_key": pem, "client_email": "tuningd@acc-proj.iam.gserviceaccount.com",
        "client_id": "100000000000000000001", "token_uri": token_uri,
    }))
    path.chmod(0o600)
    return path, pem


def test_debug_logs_hold_no_secret(procs: Processes, tmp_path: Path,
                                   echo_endpoint: EchoTokenEndpoint) -> None:
    """At debug level, with a service-account key whose token endpoint refuses every grant and
    echoes the signed assertion back, and with API calls carrying a wrong bearer token, no
    line of any log holds the key, the assertion (header, payload or signature), the API token
    or the wrong token; the refusals are logged with status and OAuth error code only."""
    key_path, pem = _service_account_key(tmp_path, echo_endpoint.url)
    api_token = "tok-" + secrets.token_urlsafe(24)
    wrong_token = "wrong-" + secrets.token_urlsafe(24)
    token_file = tmp_path / "api-token"
    token_file.write_text(api_token + "\n")
    token_file.chmod(0o600)
    emu = procs.emulator()
    daemon = procs.daemon(emu.url, {
        "server": {"token_file": str(token_file)},
        "vertex": {"anonymous": False, "credentials_file": str(key_path)},
        "logging": {"level": "debug"},
    })

    for _ in range(3):
        denied = http("GET", daemon.collection_url(), token=wrong_token)
        assert denied.status == 401, denied
    denied = http("POST", daemon.collection_url(), body=job_body(), token=wrong_token)
    assert denied.status == 401, denied
    job = daemon.submit(job_body("secret-check"))
    # Every refusal style of the endpoint is met at least once: creates and sweeps retry.
    wait_until(lambda: len(echo_endpoint.assertions()) >= 4, 60,
               message=lambda: f"4 token requests, got {len(echo_endpoint.forms)}\n"
                               f"{daemon.tail()}")
    view = json.dumps(daemon.job(job_id_of(job)))
    text = "\n".join((daemon.logs(), emu.logs(), view))

    # The refusals were logged, by status and code, so the grep below looks at real lines.
    assert "HTTP 400 from 127.0.0.1" in text and "error invalid_grant" in text, daemon.tail()
    assert "HTTP 401 from 127.0.0.1" in text and "HTTP 403 from 127.0.0.1" in text

    secrets_found: list[str] = [api_token, wrong_token, "PRIVATE KEY"]
    secrets_found += [line for line in pem.splitlines() if "-----" not in line and len(line) > 16]
    for assertion in echo_endpoint.assertions():
        header, payload, signature = assertion.split(".")
        secrets_found += [header, payload, signature]
        # Fragments too: a body cut at any length must not leak a recognisable piece.
        secrets_found += [header[:24], payload[:24], signature[:24]]
    secrets_found += [form[:40] for form in echo_endpoint.forms]
    leaked = [s for s in secrets_found if s in text]
    assert leaked == [], f"{len(leaked)} secret fragments in the logs, e.g. {leaked[:3]}"
    daemon.check_alive()

