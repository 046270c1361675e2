"""sd_notify against a real AF_UNIX datagram socket: messages, abstract names, and the watchdog."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuningd.adapters.systemd_notify import Notifier, Watchdog


class Listener:
    """A bound datagram socket standing in for systemd; parses each datagram into a dict."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def recv(self, timeout: float = 2.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def drain(self) -> list[dict[str, str]]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                out.append(dict(line.split("=", 1) for line in data.split("\n")))
        except BlockingIOError:
            return out
        finally:
            self.sock.setblocking(True)

    async def arecv(self, timeout: float = 2.0) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)
        finally:
            self.sock.setblocking(True)
        return dict(line.split("=", 1) for line in data.decode().split("\n"))


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        env_value = path
    else:
        name = f"tuningd-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        env_value = "@" + name
    try:
        yield Listener(sock, env_value)
    finally:
        sock.close()


def test_ready_status_stopping(listener: Listener) -> None:
    """Readiness, status and stopping are each one sd_notify datagram with the right keys, on a
    path or an abstract socket."""
    n = Notifier({"NOTIFY_SOCKET": listener.env_value})
    assert n.enabled
    assert n.ready()
    assert listener.recv() == {"READY": "1"}
    assert n.status("3 running, 2 queued")
    assert listener.recv() == {"STATUS": "3 running, 2 queued"}
    assert n.ready(status="serving")
    assert listener.recv() == {"READY": "1", "STATUS": "serving"}
    assert n.stopping()
    assert listener.recv() == {"STOPPING": "1"}


def test_status_cannot_inject_other_keys(listener: Listener) -> None:
    """A newline in a status text becomes a space, so the text cannot add
    another key such as READY=1."""
    n = Notifier({"NOTIFY_SOCKET": listener.env_value})
    n.status("line one\nREADY=1")
    assert listener.recv() == {"STATUS": "line one READY=1"}


def test_reloading_sends_monotonic_usec_in_the_same_datagram(listener: Listener) -> None:
    """RELOADING=1 goes in one datagram with MONOTONIC_USEC read from
    CLOCK_MONOTONIC when it is sent."""
    n = Notifier({"NOTIFY_SOCKET": listener.env_value})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    msg = listener.recv()
    assert set(msg) == {"RELOADING", "MONOTONIC_USEC"}
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after


def test_watchdog_message(listener: Listener) -> None:
    """A watchdog ping is exactly the datagram WATCHDOG=1."""
    n = Notifier({"NOTIFY_SOCKET": listener.env_value})
    assert n.watchdog()
    assert listener.recv() == {"WATCHDOG": "1"}


def test_noop_without_notify_socket() -> None:
    """Without NOTIFY_SOCKET the notifier is disabled, every send returns False and
    there is no watchdog interval."""
    n = Notifier({})
    assert not n.enabled
    assert not n.ready() and not n.status("x") and not n.watchdog()
    assert not n.reloading() and not n.stopping()
    assert n.watchdog_interval_s() is None


def test_unreachable_socket_does_not_raise(tmp_path: Path) -> None:
    """Sending to a NOTIFY_SOCKET path nobody listens on returns False instead of raising."""
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False


def test_watchdog_interval_is_half_of_usec_and_honours_pid() -> None:
    """The ping interval is half of WATCHDOG_USEC, and there is none when WATCHDOG_PID names another
    process or WATCHDOG_USEC is missing, zero or malformed."""
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"}
    assert Notifier(env).watchdog_interval_s() == 15.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s() == 15.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval_s() is None
    assert Notifier({**env, "WATCHDOG_PID": "1"}, pid=1).watchdog_interval_s() == 15.0
    assert Notifier({**env, "WATCHDOG_USEC": "0"}).watchdog_interval_s() is None
    assert Notifier({**env, "WATCHDOG_USEC": "junk"}).watchdog_interval_s() is None
    assert Notifier({"NOTIFY_SOCKET": "@x"}).watchdog_interval_s() is None


async def test_watchdog_pings_only_while_progress_is_reported(listener: Listener) -> None:
    """The watchdog pings at its interval while the engine reports progress, falls silent once
    progress stops, and resumes on the next progress."""
    # WATCHDOG_USEC=100 ms -> ping interval 50 ms.
    n = Notifier({"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "100000"})
    wd = Watchdog(n)
    assert wd.enabled and wd.interval_s == pytest.approx(0.05)

    stop_progress = asyncio.Event()

    async def engine() -> None:
        # Stands in for the engine loop: reports progress each iteration until it wedges.
        while not stop_progress.is_set():
            wd.progress()
            await asyncio.sleep(0.005)

    engine_task = asyncio.create_task(engine())
    task = wd.start()
    try:
        assert await listener.arecv() == {"WATCHDOG": "1"}  # initial ping at start
        for _ in range(3):
            assert await listener.arecv() == {"WATCHDOG": "1"}
        assert wd.pings >= 3

        stop_progress.set()
        await engine_task
        # At most one ping can still be in flight for progress made just before the stop.
        # Wait until the watchdog has noticed two silent intervals, then nothing may arrive.
        async with asyncio.timeout(2.0):
            while wd.missed < 2:
                await asyncio.sleep(0.01)
        listener.drain()
        missed = wd.missed
        async with asyncio.timeout(2.0):
            while wd.missed < missed + 2:
                await asyncio.sleep(0.01)
        assert listener.drain() == []

        # Progress again: pings resume.
        wd.progress()
        assert await listener.arecv() == {"WATCHDOG": "1"}
    finally:
        stop_progress.set()
        await Watchdog.stop(task)


async def test_watchdog_disabled_returns_at_once() -> None:
    """Without NOTIFY_SOCKET or without WATCHDOG_USEC the watchdog is
    disabled and run() returns at once."""
    wd = Watchdog(Notifier({}))
    assert not wd.enabled
    await asyncio.wait_for(wd.run(), 1.0)
    wd2 = Watchdog(Notifier({"NOTIFY_SOCKET": "@nobody-listens"}))  # no WATCHDOG_USEC
    assert not wd2.enabled
    await asyncio.wait_for(wd2.run(), 1.0)
