"""sd_notify without libsystemd: readiness, status, reload, stop and a progress-gated watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET; every method is a no-op when it is unset."""

    def __init__(self, env: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        env = os.environ if env is None else env
        self._pid = os.getpid() if pid is None else pid
        raw = env.get("NOTIFY_SOCKET", "")
        # A leading '@' names a socket in the abstract namespace, spelled with a NUL byte.
        self._address: str | None = ("\0" + raw[1:] if raw.startswith("@") else raw) or None
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of KEY=VALUE lines; False if disabled or the send failed."""
        if self._address is None or not fields:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self._address)
        except OSError as exc:
            # systemd going away must not take the daemon down with it; just say so.
            log.warning("notify.failed", error=str(exc), fields=sorted(fields))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=_one_line(status))

    def status(self, text: str) -> bool:
        return self.send(STATUS=_one_line(text))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def reloading(self) -> bool:
        # systemd pairs RELOADING=1 with this reload only via MONOTONIC_USEC in the same datagram.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def watchdog_interval_s(self) -> float | None:
        """Half of WATCHDOG_USEC, or None when the watchdog is off or meant for another PID."""
        if self._address is None or not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != self._pid:
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE pair, letting a status text inject e.g. READY=1.
    return " ".join(text.splitlines())


class Watchdog:
    """Pings WATCHDOG=1 every interval, but only if progress() was called since the last ping.

    A wedged engine loop stops calling progress() and systemd restarts the daemon; a Vertex
    outage does not wedge the loop, so it does not cause restarts.
    """

    def __init__(self, notifier: Notifier, interval_s: float | None = None) -> None:
        self._notifier = notifier
        self.interval_s = notifier.watchdog_interval_s() if interval_s is None else interval_s
        self._progressed = False
        self.pings = 0
        self.missed = 0

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None and self._notifier.enabled

    def progress(self) -> None:
        """Called by the engine once per loop iteration; cheap."""
        self._progressed = True

    async def run(self) -> None:
        """Ping loop; returns at once when the watchdog is off. Cancel it to stop."""
        if self.interval_s is None or not self._notifier.enabled:
            return
        # Ping once at start so a slow first engine iteration cannot trip the watchdog.
        self._notifier.watchdog()
        while True:
            await asyncio.sleep(self.interval_s)
            if self._progressed:
                self._progressed = False
                self._notifier.watchdog()
                self.pings += 1
            else:
                self.missed += 1
                log.warning(
                    "watchdog.withheld",
                    interval_s=self.interval_s,
                    missed=self.missed,
                )

    def start(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self.run(), name="watchdog")

    @staticmethod
    async def stop(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
