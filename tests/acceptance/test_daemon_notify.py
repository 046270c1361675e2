"""Acceptance: the real daemon sends sd_notify READY, WATCHDOG, RELOADING and STOPPING."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from helpers import Processes

pytestmark = pytest.mark.acceptance


class FakeSystemd:
    """The notify socket systemd would own; collects parsed datagrams."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[dict[str, str]] = []

    def next_matching(self, key: str, timeout: float) -> dict[str, str]:
        """The next datagram containing `key` (others are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key} within {timeout}s; seen {self.seen}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            msg = dict(line.split("=", 1) for line in data.split("\n") if line)
            self.seen.append(msg)
            if key in msg:
                return msg

    def close(self) -> None:
        self.sock.close()


def test_daemon_notifies_ready_watchdog_reload_and_stop(procs: Processes, tmp_path: Path) -> None:
    """The real daemon sends READY with a serving status, WATCHDOG pings, RELOADING with
    MONOTONIC_USEC then READY again on SIGHUP, and STOPPING on SIGTERM before exiting 0."""
    systemd = FakeSystemd(tmp_path / "notify.sock")
    try:
        emu = procs.emulator()
        # 3 s watchdog -> a ping every 1.5 s while the engine loop (1 s tick) makes progress.
        env = {**os.environ, "NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "3000000"}
        daemon = procs.daemon(emu.url, env=env)

        ready = systemd.next_matching("READY", timeout=30)
        assert ready["READY"] == "1"
        assert "serving on" in ready.get("STATUS", ""), ready
        for _ in range(2):
            assert systemd.next_matching("WATCHDOG", timeout=10) == {"WATCHDOG": "1"}

        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        daemon.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        reloading = systemd.next_matching("RELOADING", timeout=10)
        assert set(reloading) == {"RELOADING", "MONOTONIC_USEC"}, reloading
        assert int(reloading["MONOTONIC_USEC"]) >= before
        assert systemd.next_matching("READY", timeout=10)["READY"] == "1"
        daemon.check_alive()

        daemon.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert systemd.next_matching("STOPPING", timeout=10) == {"STOPPING": "1"}
        assert daemon.stop(timeout_s=20) == 0, daemon.tail()
    finally:
        systemd.close()
