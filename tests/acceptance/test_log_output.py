"""Acceptance: real processes log JSON lines when stderr is a file or a pipe, short console lines
on a terminal (the standalone emulator as the daemon)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import REPO, tuningd_argv

pytestmark = pytest.mark.acceptance


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TUNINGD_")}


def _first_line_with(read: bytes, needle: bytes) -> bytes | None:
    for line in read.splitlines():
        if needle in line:
            return line
    return None


def _until_line(proc: subprocess.Popen[bytes], read_more: Callable[[], bytes], needle: bytes,
                timeout_s: float = 20.0) -> bytes:
    """Read the process's stderr (via `read_more`) until a line holds `needle`."""
    got = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got += read_more()
        line = _first_line_with(got, needle)
        if line is not None:
            return line
        assert proc.poll() is None, got.decode(errors="replace")
    raise AssertionError(f"no {needle!r} line in:\n{got.decode(errors='replace')}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def test_standalone_emulator_logs_json_to_a_file(tmp_path: Path) -> None:
    """`tuningd emulator` with stderr in a file writes one JSON object per line there."""
    log_path = tmp_path / "emulator.log"
    with log_path.open("wb") as err:
        proc = subprocess.Popen(tuningd_argv("emulator", "--port", "0"), stdout=err, stderr=err,
                                stdin=subprocess.DEVNULL, cwd=str(REPO), env=_env())
    try:
        line = _until_line(proc, log_path.read_bytes, b"emulator.started")
        record = json.loads(line)
        assert record["event"] == "emulator.started" and record["level"] == "info"
        assert record["url"].startswith("http://127.0.0.1:")
    finally:
        _stop(proc)
    assert all(json.loads(x) for x in log_path.read_text().splitlines() if x.strip())


def test_daemon_logs_json_into_a_pipe_and_console_lines_on_a_terminal(tmp_path: Path) -> None:
    """`tuningd serve --emulator` with no config: piped stderr gets JSON lines, a terminal gets
    short console lines (not JSON) with the level and event up front."""
    piped = subprocess.Popen(tuningd_argv("serve", "--emulator", "--port", "0"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, cwd=str(REPO), env=_env())
    try:
        assert piped.stderr is not None
        fd = piped.stderr.fileno()

        def read_pipe() -> bytes:
            ready, _, _ = select.select([fd], [], [], 0.2)
            return os.read(fd, 65536) if ready else b""

        record = json.loads(_until_line(piped, read_pipe, b"daemon.ready"))
        assert record["event"] == "daemon.ready"
    finally:
        _stop(piped)

    master, slave = pty.openpty()
    tty = subprocess.Popen(tuningd_argv("serve", "--emulator", "--port", "0"),
                           stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL,
                           cwd=str(REPO), env=_env())
    os.close(slave)
    try:
        def read_tty() -> bytes:
            ready, _, _ = select.select([master], [], [], 0.2)
            try:
                return os.read(master, 65536) if ready else b""
            except OSError:  # the terminal closed (the process ended)
                return b""

        line = _until_line(tty, read_tty, b"daemon.ready").decode()
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
        assert " INFO " in line and len(line) < 400
    finally:
        _stop(tty)
        os.close(master)
