"""Issue 9, finding 2, through a real `tuningd serve`: what aiohttp refuses on its own (request
line, headers, body encodings) and what the parsers could not convert (non-ASCII credentials,
5,000-digit numbers) answers a 4xx in Google's envelope with Google's Content-Type, never a 500
or a plain-text 400, and leaves no traceback (nor the token) in the log."""

from __future__ import annotations

import gzip
import json
import os
import socket
from collections.abc import Iterator

import pytest
from helpers import (
    LOCATION,
    PROJECT,
    DaemonProc,
    EmulatorProc,
    Processes,
    job_body,
    processes,
)

pytestmark = pytest.mark.acceptance

TOKEN = "envelope-token-5f2c"
COLLECTION = f"/v1/projects/{PROJECT}/locations/{LOCATION}/tuningJobs"
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
VALID = json.dumps(job_body()).encode()
HUGE = "9" * 5000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    tmp = tmp_path_factory.mktemp("envelope")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    procs: Processes
    with processes(tmp) as procs:
        emu: EmulatorProc = procs.emulator()
        yield procs.daemon(emu.url, {"server": {"token_file": str(token_file)}})


def _exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read one HTTP answer (status, headers, body) until the server closes or
    the body is complete."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        received = b""
        while True:
            head, sep, body = received.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:])}
                if len(body) >= int(headers.get("content-length", "-1")) >= 0:
                    return int(lines[0].split()[1]), headers, body
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed mid-answer: {received[:300]!r}")
            received += chunk


def _request(method: str, target: str, headers: list[tuple[bytes, bytes]] | None = None,
             body: bytes = b"", *, token: bool = True) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    if token:
        lines.append(f"Authorization: Bearer {TOKEN}".encode())
    lines += [name + b": " + value for name, value in headers or []]
    lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


CASES = {
    # Reachable without a token: the header is checked before anything else.
    "non-ASCII Authorization": (
        _request("GET", COLLECTION, [(b"Authorization", b"Bearer \xff\xfe")], token=False),
        401, "UNAUTHENTICATED"),
    "epochCount of 5,000 digits": (
        _request("POST", COLLECTION, [(b"Content-Type", b"application/json")], json.dumps(
            job_body(supervisedTuningSpec={"trainingDatasetUri": "gs://b/t.jsonl",
                                           "hyperParameters": {"epochCount": HUGE}})).encode()),
        400, "INVALID_ARGUMENT"),
    "body not gzip under Content-Encoding gzip": (
        _request("POST", COLLECTION, [(b"Content-Encoding", b"gzip")], VALID),
        400, "INVALID_ARGUMENT"),
    "body not deflate under Content-Encoding deflate": (
        _request("POST", COLLECTION, [(b"Content-Encoding", b"deflate")], VALID),
        400, "INVALID_ARGUMENT"),
    "Content-Encoding br": (
        _request("POST", COLLECTION, [(b"Content-Encoding", b"br")], VALID),
        400, "INVALID_ARGUMENT"),
    "Content-Encoding nobody knows": (
        _request("POST", COLLECTION, [(b"Content-Encoding", b"x-custom")], VALID),
        400, "INVALID_ARGUMENT"),
    "request line over 64 KiB": (
        _request("GET", COLLECTION + "?filter=" + "a" * 70_000), 400, "INVALID_ARGUMENT"),
    "header over 64 KiB": (
        _request("GET", COLLECTION, [(b"X-Big", b"a" * 70_000)]), 400, "INVALID_ARGUMENT"),
    "too many headers": (
        _request("GET", COLLECTION, [(f"X-H{i}".encode(), b"1") for i in range(200)]),
        400, "INVALID_ARGUMENT"),
    "invalid method": (b"G\x01T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "INVALID_ARGUMENT"),
    "TLS on the plain port": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
                              400, "INVALID_ARGUMENT"),
    "bad Content-Length": (
        b"POST " + COLLECTION.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
        400, "INVALID_ARGUMENT"),
    "bad chunk size": (
        b"POST " + COLLECTION.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
        "INVALID_ARGUMENT"),
    "state filter of 5,000 digits": (
        _request("GET", f"{COLLECTION}?filter=state%3D{HUGE}"), 400, "INVALID_ARGUMENT"),
    "state filter of a superscript digit": (
        _request("GET", f"{COLLECTION}?filter=state%3D%C2%B2"), 400, "INVALID_ARGUMENT"),
    "pageSize of 5,000 digits": (
        _request("GET", f"{COLLECTION}?pageSize={HUGE}"), 400, "INVALID_ARGUMENT"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_refusal_is_a_4xx_in_googles_envelope(daemon: DaemonProc, name: str) -> None:
    """Each hostile request gets its 4xx with Google's envelope and Content-Type, the message
    echoes none of the request's bytes, and the daemon keeps answering."""
    raw, status, canonical = CASES[name]
    port = int(daemon.url.rsplit(":", 1)[1])
    got, headers, body = _exchange(port, raw)
    assert (got, headers.get("content-type")) == (status, JSON_CONTENT_TYPE), (name, body[:300])
    error = json.loads(body)["error"]
    assert (error["code"], error["status"]) == (status, canonical), error
    assert TOKEN not in error["message"] and "\\x" not in error["message"], error
    assert daemon.call("GET", "/healthz").status == 200


def test_valid_gzip_body_is_still_accepted(daemon: DaemonProc) -> None:
    """A create whose body really is gzip (Content-Encoding: gzip) is queued as usual."""
    port = int(daemon.url.rsplit(":", 1)[1])
    status, _, body = _exchange(port, _request(
        "POST", COLLECTION, [(b"Content-Encoding", b"gzip"),
                             (b"Content-Type", b"application/json")], gzip.compress(VALID)))
    assert status == 200, body[:300]
    assert json.loads(body)["state"] == "JOB_STATE_QUEUED"


def test_log_holds_no_traceback_and_no_token(daemon: DaemonProc) -> None:
    """After every refusal above, the daemon's log has one line per refusal and no traceback,
    no 500 and no bearer token."""
    port = int(daemon.url.rsplit(":", 1)[1])
    for raw, _, _ in CASES.values():
        _exchange(port, raw)
    logs = daemon.logs()
    assert "Traceback" not in logs
    assert TOKEN not in logs
    records = daemon.log_records()
    assert not [r for r in records if r.get("event") == "api_request" and r["status"] >= 500]
    assert sum(r.get("event") == "request.malformed" for r in records) >= 7


def test_openapi_lists_what_the_refusals_answer(daemon: DaemonProc) -> None:
    """Every operation in /openapi.json lists 400 (the HTTP layer's refusals) and 500, and
    every one that reads a body lists 413."""
    doc = daemon.call("GET", "/openapi.json").json
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            codes = set(operation["responses"])
            assert {"400", "500"} <= codes, (method, path)
            if "requestBody" in operation:
                assert "413" in codes, (method, path)
