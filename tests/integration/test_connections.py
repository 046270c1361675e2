"""The connection guard on loopback: header-read and keep-alive timeouts, the cap, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import resource
import socket
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp import web

from tuningd.adapters.secret_files import bind_private_unix_socket
from tuningd.config import ServerSettings
from tuningd.http.connections import (
    ASYNCIO_ACCEPT_MESSAGE,
    RESERVED_FDS,
    ConnectionGuard,
    ConnectionLimits,
    ThrottledEvent,
    connection_capacity,
    tcp_listeners,
    throttle_asyncio_accept_errors,
)

GET = b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass
class Served:
    guard: ConnectionGuard
    port: int
    release: asyncio.Event
    blocked: asyncio.Queue[None]

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


async def _fast(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@contextlib.asynccontextmanager
async def serve(limits: ConnectionLimits, unix_path: str = "") -> AsyncIterator[Served]:
    release = asyncio.Event()
    blocked: asyncio.Queue[None] = asyncio.Queue()

    async def block(_request: web.Request) -> web.Response:
        blocked.put_nowait(None)
        await release.wait()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/fast", _fast)
    app.router.add_get("/block", block)
    runner = web.AppRunner(app, keepalive_timeout=limits.keepalive_timeout_s)
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard(runner.server, limits)
    sock = tcp_listeners("127.0.0.1", 0)[0]
    port = sock.getsockname()[1]
    await guard.start_site(runner, sock, "test")
    if unix_path:
        await guard.start_site(runner, bind_private_unix_socket(unix_path), "unix")
    try:
        yield Served(guard, port, release, blocked)
    finally:
        release.set()
        guard.close()
        await runner.cleanup()


async def closed_by_server(reader: asyncio.StreamReader, timeout_s: float = 10.0) -> bytes:
    """Everything the server sent until it closed the connection."""
    async def drain() -> bytes:
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                data += chunk
        return data
    return await asyncio.wait_for(drain(), timeout_s)


async def request(served: Served, path: str = "/fast") -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session:
        resp = await session.get(f"http://127.0.0.1:{served.port}{path}")
        await resp.read()
        return resp


async def test_silent_connection_is_closed_after_the_header_timeout() -> None:
    """A client that connects and never sends a byte is closed by the header-read timeout."""
    async with serve(ConnectionLimits(header_timeout_s=0.2, keepalive_timeout_s=60)) as s:
        reader, writer = await s.connect()
        assert await closed_by_server(reader) == b""
        writer.close()
        assert s.guard.shed_report.total == 1


async def test_slowloris_is_closed_although_it_keeps_sending() -> None:
    """Header lines dripping in do not extend the header-read timeout."""
    async with serve(ConnectionLimits(header_timeout_s=0.3, keepalive_timeout_s=60)) as s:
        reader, writer = await s.connect()
        writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\n")
        closed = asyncio.ensure_future(closed_by_server(reader))
        lines = 0
        while not closed.done() and lines < 200:  # 200 lines = 10 s: far past the timeout
            writer.write(b"X-Slow: %d\r\n" % lines)
            lines += 1
            await asyncio.wait([closed], timeout=0.05)
        assert closed.done() and await closed == b"", f"still open after {lines} lines"
        writer.close()


async def test_keepalive_connection_outlives_the_header_timeout_and_then_idles_out() -> None:
    """After a full request the header timeout no longer applies; keep-alive idling closes it."""
    limits = ConnectionLimits(header_timeout_s=0.2, keepalive_timeout_s=1.0)
    async with serve(limits) as s:
        reader, writer = await s.connect()
        writer.write(GET)
        assert b" 200 " in await reader.readuntil(b"\r\n")
        await asyncio.sleep(0.5)  # past the header timeout, within the keep-alive timeout
        await reader.read(65536)  # the rest of the first response
        writer.write(GET)
        assert b" 200 " in await reader.readuntil(b"\r\n")
        await closed_by_server(reader)
        writer.close()


async def test_at_the_cap_the_oldest_idle_connection_makes_room() -> None:
    """With the cap reached by silent clients, a real request is served and the oldest goes."""
    async with serve(ConnectionLimits(max_connections=2, header_timeout_s=60)) as s:
        r1, w1 = await s.connect()
        _r2, w2 = await s.connect()
        while s.guard.open_count < 2 or not all(c.idle() for c in s.guard._conns):
            await asyncio.sleep(0.01)
        assert (await request(s)).status == 200
        assert await closed_by_server(r1) == b""
        for w in (w1, w2):
            w.close()


async def test_past_the_cap_with_every_connection_busy_a_newcomer_gets_503() -> None:
    """When every held connection is handling a request, a new one gets 503 in the envelope."""
    async with serve(ConnectionLimits(max_connections=2, header_timeout_s=60)) as s:
        busy = [asyncio.ensure_future(request(s, "/block")) for _ in range(2)]
        for _ in busy:
            await s.blocked.get()
        reader, writer = await s.connect()
        writer.write(GET)
        raw = await closed_by_server(reader)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert b"Connection: close" in head and b"Retry-After: 1" in head
        err = json.loads(body)["error"]
        assert err["code"] == 503 and err["status"] == "UNAVAILABLE"
        assert "server.max_connections" in err["message"]
        s.release.set()
        assert [r.status for r in await asyncio.gather(*busy)] == [200, 200]
        writer.close()


async def test_unix_socket_is_owner_only_and_guarded(tmp_path: Path) -> None:
    """The unix listener (0600 whatever the umask) serves through the guard."""
    path = str(tmp_path / "api.sock")
    old = os.umask(0)
    try:
        async with serve(ConnectionLimits(), unix_path=path) as s:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            conn = aiohttp.UnixConnector(path=path)
            async with (aiohttp.ClientSession(connector=conn) as session,
                        session.get("http://localhost/fast") as resp):
                assert resp.status == 200
                assert s.guard.open_count == 1
    finally:
        os.umask(old)


def _exhaust_descriptors() -> tuple[int, list[int]]:
    """Lower the limit to just above the highest open descriptor and fill every hole below it,
    so the next descriptor the process gets is one it closed (RLIMIT_NOFILE bounds numbers)."""
    limit = max(int(fd) for fd in os.listdir("/proc/self/fd")) + 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    fillers: list[int] = []
    try:
        while True:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == errno.EMFILE
    return soft, fillers


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
async def test_out_of_descriptors_is_logged_once_and_every_client_is_served() -> None:
    """accept() failing with EMFILE logs one line per interval with a count, idle connections
    are shed to free descriptors, and every queued client is still answered."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with serve(ConnectionLimits(header_timeout_s=60, reserved_fds=0)) as s:
        # One answered keep-alive connection: the idle one the guard can shed first.
        idle = socket.create_connection(("127.0.0.1", s.port))
        idle.settimeout(10)
        idle.sendall(GET)
        assert b" 200 " in await asyncio.to_thread(idle.recv, 65536)
        # Queued in the backlog: the loop does not run between these calls.
        clients = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(6)]
        for c in clients:
            c.sendall(GET)
            c.settimeout(10)
        with structlog.testing.capture_logs() as logs:
            soft, fillers = _exhaust_descriptors()
            try:
                answers = await asyncio.gather(*(asyncio.to_thread(c.recv, 65536)
                                                 for c in clients))
            finally:
                for fd in fillers:
                    os.close(fd)
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for c in [idle, *clients]:
            c.close()
        assert all(b" 200 " in a for a in answers), answers
        failed = [e for e in logs if e["event"] == "server.accept_failed"]
        assert s.guard.accept_report.total >= len(clients)
        assert len(failed) == 1 and failed[0]["counts"] == {"EMFILE": 1}, failed


def test_capacity_is_the_cap_within_the_descriptor_limit() -> None:
    """The cap shrinks to the descriptor limit minus the reserve, and never below one."""
    limits = ConnectionLimits(max_connections=256, reserved_fds=64)
    assert connection_capacity(limits, 4096) == 256
    assert connection_capacity(limits, 128) == 64
    assert connection_capacity(limits, 10) == 1


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.scheduled: list[tuple[float, Callable[[], None]]] = []

    def __call__(self) -> float:
        return self.now

    def schedule(self, delay_s: float, fn: Callable[[], None]) -> None:
        self.scheduled.append((delay_s, fn))


def test_a_storm_is_logged_once_per_interval_with_its_count() -> None:
    """A thousand hits in one interval make one line at once and one flushed line with 999."""
    clock = ManualClock()
    event = ThrottledEvent("test.storm", interval_s=10.0, clock=clock, schedule=clock.schedule)
    with structlog.testing.capture_logs() as logs:
        for _ in range(1000):
            event.hit("EMFILE")
            clock.now += 0.001
        assert [e["counts"] for e in logs] == [{"EMFILE": 1}]
        assert len(clock.scheduled) == 1
        clock.now += 10
        clock.scheduled[0][1]()
    assert [e["counts"] for e in logs] == [{"EMFILE": 1}, {"EMFILE": 999}]


async def test_asyncio_accept_errors_are_throttled_and_others_still_logged() -> None:
    """asyncio's per-client accept tracebacks go through the throttle; other errors do not."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _lp, ctx: seen.append(ctx))
    report = ThrottledEvent("server.accept_failed", interval_s=10.0)
    try:
        throttle_asyncio_accept_errors(loop, report)
        with structlog.testing.capture_logs() as logs:
            for _ in range(500):
                loop.call_exception_handler({"message": ASYNCIO_ACCEPT_MESSAGE,
                                             "exception": OSError(errno.EMFILE, "Too many")})
        loop.call_exception_handler({"message": "something else"})
    finally:
        loop.set_exception_handler(None)
    assert report.total == 500 and len(logs) == 1 and logs[0]["counts"] == {"EMFILE": 1}
    assert [ctx["message"] for ctx in seen] == ["something else"]


def test_systemd_limit_nofile_is_sized_from_the_default_cap() -> None:
    """The unit's LimitNOFILE holds server.max_connections plus the descriptors kept back."""
    unit = Path(__file__).resolve().parents[2] / "systemd" / "tuningd.service"
    values = [line.split("=", 1)[1] for line in unit.read_text().splitlines()
              if line.startswith("LimitNOFILE=")]
    assert values == [str(ServerSettings().max_connections + RESERVED_FDS)]
