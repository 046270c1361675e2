"""Control-API connections: accepted within the descriptor limit, capped, idle ones timed out."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from tuningd.core.errors import Unavailable
from tuningd.vertex import wire

log = structlog.get_logger("tuningd.http.connections")

# Descriptors tuningd keeps for itself beyond client connections: SQLite's database, WAL, SHM
# and lock, Vertex connections, the listeners, the event loop, stdio, logging. The unit's
# LimitNOFILE is server.max_connections plus this.
RESERVED_FDS = 64
# Connections taken off the listen queue per readiness event, so one listener cannot starve
# the rest of the loop.
ACCEPT_BATCH = 32
# After the kernel refuses to hand out a descriptor, try again this soon (asyncio's own accept
# waits a whole second, during which nobody, /healthz included, gets in).
ACCEPT_RETRY_S = 0.05
# Storms (accept errors, sheds) are logged at most once per interval, with a count.
REPORT_INTERVAL_S = 10.0
# At the cap, a newcomer whose request is already waiting displaces the oldest idle connection.
# One that has not sent a byte yet (an attacker, or a client whose request is still in flight)
# displaces only a connection that never sent a byte either, or one quiet for this long: so
# reconnecting silent clients churn among themselves, not through slowloris or keep-alive ones.
EVICT_GRACE_S = 1.0
# A burst of connections beyond the listen queue has its SYNs dropped, and the kernel retries
# them only a second later; the kernel caps this at net.core.somaxconn (4096 by default).
LISTEN_BACKLOG = 1024

_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# asyncio's own accept loop (other servers in the process, e.g. the embedded emulator) reports
# exhausted descriptors through the loop's exception handler with this message.
ASYNCIO_ACCEPT_MESSAGE = "socket.accept() out of system resource"


@dataclass(frozen=True)
class ConnectionLimits:
    """How many client connections are held and how long a silent or slow one may stay."""

    max_connections: int = 256
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 75.0
    reserved_fds: int = RESERVED_FDS


def descriptor_limit() -> int:
    """The process's soft RLIMIT_NOFILE, read now (an operator may lower it with prlimit)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else int(soft)


def connection_capacity(limits: ConnectionLimits, fd_limit: int) -> int:
    """Client connections held at once: the configured cap, within the descriptor limit."""
    return max(1, min(limits.max_connections, fd_limit - limits.reserved_fds))


def raise_descriptor_limit(limits: ConnectionLimits) -> int:
    """Raise the soft descriptor limit towards what the cap needs (never above the hard limit).

    Under the systemd unit setrlimit is filtered (EPERM) and LimitNOFILE already fits; from a
    shell the soft limit is often 1,024 with a far higher hard limit. Returns the soft limit."""
    wanted = limits.max_connections + limits.reserved_fds
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return descriptor_limit()


class ThrottledEvent:
    """One log event that a storm emits at most once per interval, with counts of what it saw."""

    def __init__(self, event: str, *, level: str = "warning",
                 interval_s: float = REPORT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic,
                 schedule: Callable[[float, Callable[[], None]], Any] | None = None,
                 context: Callable[[], dict[str, Any]] | None = None) -> None:
        self.event = event
        self._level = level
        self._interval_s = interval_s
        self._clock = clock
        self._schedule = schedule
        self._context = context or dict
        self._counts: dict[str, int] = {}
        self._last_emit = float("-inf")
        self._flush_pending = False
        self.total = 0

    def hit(self, reason: str, **fields: Any) -> None:
        """Count one occurrence; log now if the interval since the last line has passed."""
        self.total += 1
        self._counts[reason] = self._counts.get(reason, 0) + 1
        wait_s = self._last_emit + self._interval_s - self._clock()
        if wait_s <= 0:
            self._emit(fields)
        elif not self._flush_pending and self._schedule is not None:
            # The storm may end inside the interval: its count must still reach the log.
            self._flush_pending = True
            self._schedule(wait_s, self.flush)

    def flush(self) -> None:
        """Log what was counted since the last line (nothing if nothing was)."""
        self._flush_pending = False
        if self._counts:
            self._emit({})

    def _emit(self, fields: dict[str, Any]) -> None:
        counts, self._counts = self._counts, {}
        self._last_emit = self._clock()
        getattr(log, self._level)(self.event, counts=counts, interval_s=self._interval_s,
                                  **self._context(), **fields)


def _handler_idle(handler: RequestHandler) -> bool:
    """True while the handler waits for the next request's head (none, or only part of it, has
    arrived): aiohttp's own keep-alive test. A request being handled or queued is never idle."""
    waiter = getattr(handler, "_waiter", None)
    return (isinstance(waiter, asyncio.Future) and not waiter.done()
            and not getattr(handler, "_messages", None))


def _requests_parsed(handler: RequestHandler) -> int:
    """Request heads the handler has parsed on this connection so far."""
    return int(getattr(handler, "_request_count", 0))


class _GuardedConnection(asyncio.Protocol):
    """An aiohttp request handler plus the header-read timer and the guard's bookkeeping."""

    def __init__(self, guard: ConnectionGuard, handler: RequestHandler,
                 sock: socket.socket) -> None:
        self._guard = guard
        self.handler = handler
        self._sock = sock
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._parsed_at_arm = 0
        self.last_activity = asyncio.get_running_loop().time()
        self.spoke = False
        self._shed = False
        self._started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self._shed:  # displaced between accept() and now
            transport.close()
            return
        self._started = True
        self.handler.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self.last_activity = asyncio.get_running_loop().time()
        self.spoke = True
        idle_before = _handler_idle(self.handler)
        self.handler.data_received(data)
        if _requests_parsed(self.handler) != self._parsed_at_arm:
            self._disarm()
        elif idle_before and self._timer is None:
            # The first bytes of a keep-alive connection's next request: its head has
            # header_timeout_s from now (until then aiohttp's keep-alive timeout applied).
            self._arm()

    def eof_received(self) -> None:
        self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._guard.lost(self)
        if self._started:
            self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def idle(self) -> bool:
        """Not handling a request and none waiting to be read: silent so far (not even unread
        bytes in the kernel), or waiting for the next request's head."""
        if not self.spoke:
            return not _has_data(self._sock)
        return _handler_idle(self.handler)

    def close(self) -> None:
        self._disarm()
        self._shed = True
        if self.transport is not None:
            self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._parsed_at_arm = _requests_parsed(self.handler)
        self._timer = asyncio.get_running_loop().call_later(
            self._guard.limits.header_timeout_s, self._header_deadline)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_deadline(self) -> None:
        self._timer = None
        if _requests_parsed(self.handler) == self._parsed_at_arm:
            self._guard.shed(self, "header_timeout")


def _has_data(conn: socket.socket) -> bool:
    """Whether the client already sent something (its request, or an EOF)."""
    try:
        conn.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # reset already: cheap to take in, aiohttp closes it at once
    return True


def _refusal(open_count: int) -> bytes:
    err = Unavailable(f"tuningd is at its connection limit ({open_count} open, "
                      "server.max_connections); retry later")
    body = json.dumps(wire.error_envelope(err)).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class ConnectionGuard:
    """Accepts control-API connections for an aiohttp server and keeps their number bounded.

    At the cap, the oldest connection that is not handling a request (silent, slowloris,
    keep-alive idle) is closed to make room (see EVICT_GRACE_S); when none can go, the newcomer
    gets a 503 in Google's envelope. The cap shrinks with the descriptor limit, so accept()
    does not run out of descriptors because of clients; if it does anyway, an idle connection
    is shed and accepting resumes within ACCEPT_RETRY_S."""

    def __init__(self, server: web.Server, limits: ConnectionLimits) -> None:
        self._server = server
        self.limits = limits
        self._loop = asyncio.get_running_loop()
        # Insertion order = admission order: the first idle one found is the oldest.
        self._conns: dict[_GuardedConnection, None] = {}
        self._connecting: set[asyncio.Task[Any]] = set()
        self._listeners: list[socket.socket] = []
        self._closed = False
        self.shed_report = ThrottledEvent(
            "server.connections_shed", level="info", schedule=self._loop.call_later,
            context=self._status)
        self.accept_report = ThrottledEvent(
            "server.accept_failed", schedule=self._loop.call_later, context=self._status)

    @property
    def open_count(self) -> int:
        return len(self._conns)

    def capacity(self) -> int:
        return connection_capacity(self.limits, descriptor_limit())

    def _status(self) -> dict[str, Any]:
        return {"open": self.open_count, "capacity": self.capacity(),
                "fd_limit": descriptor_limit()}

    # -- listeners -----------------------------------------------------------------------

    async def start_site(self, runner: web.BaseRunner, sock: socket.socket,
                         name: str) -> web.BaseSite:
        """Serve `sock` (listening) through this guard as a site of `runner`."""
        site = _GuardedSite(runner, self, sock, name)
        await site.start()
        return site

    def serve(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.listen(LISTEN_BACKLOG)  # in case the caller bound it without listening
        self._listeners.append(sock)
        self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting (the runner closes the sockets) and log what is still counted."""
        self._closed = True
        for sock in self._listeners:
            if sock.fileno() != -1:
                self._loop.remove_reader(sock.fileno())
        self.shed_report.flush()
        self.accept_report.flush()

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    raise
                self.accept_report.hit(errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                                       error=exc.strerror)
                # Free a descriptor for the next try; the queued client waits ACCEPT_RETRY_S.
                self._evict_one(newcomer_active=True)
                self._pause(sock)
                return
            conn.setblocking(False)
            # The newcomer's descriptor exists already; RESERVED_FDS covers it until the
            # evicted connection's is closed on the loop's next turn.
            if (self.open_count >= self.capacity()
                    and not self._evict_one(newcomer_active=_has_data(conn))):
                self._refuse(conn)
                continue
            # Counted (and displaceable) from now on, before its transport exists.
            proto = _GuardedConnection(self, self._server(), conn)
            self._conns[proto] = None
            task = self._loop.create_task(self._connect(proto, conn))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    def _pause(self, sock: socket.socket) -> None:
        self._loop.remove_reader(sock.fileno())
        self._loop.call_later(ACCEPT_RETRY_S, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed and sock.fileno() != -1:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def _connect(self, proto: _GuardedConnection, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: proto, conn)
        except OSError:
            self.lost(proto)
            conn.close()

    def _refuse(self, conn: socket.socket) -> None:
        self.shed_report.hit("refused")
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            # Reading what the client already sent lets close() send FIN, not RST, so the
            # client sees the answer rather than "connection reset".
            with contextlib.suppress(BlockingIOError):
                conn.recv(65536)
            conn.send(_refusal(self.open_count))
        conn.close()

    # -- bookkeeping ---------------------------------------------------------------------

    def lost(self, conn: _GuardedConnection) -> None:
        self._conns.pop(conn, None)

    def shed(self, conn: _GuardedConnection, reason: str) -> None:
        """Close one connection that is not handling a request, and count why."""
        self._conns.pop(conn, None)
        conn.close()
        self.shed_report.hit(reason)

    def _evict_one(self, *, newcomer_active: bool) -> bool:
        quiet_since = self._loop.time() - EVICT_GRACE_S
        for conn in self._conns:
            if conn.idle() and (newcomer_active or not conn.spoke
                                or conn.last_activity <= quiet_since):
                self.shed(conn, "evicted_idle")
                return True
        return False


class _GuardedSite(web.BaseSite):
    """An aiohttp site whose connections are accepted by a ConnectionGuard."""

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, sock: socket.socket,
                 name: str) -> None:
        super().__init__(runner, backlog=LISTEN_BACKLOG)
        self._guard = guard
        self._sock = sock
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        # start_serving=False: asyncio's accept loop stays off; the guard's takes its place.
        # The asyncio.Server still owns the socket: closing the site closes it.
        self._server = await loop.create_server(
            asyncio.Protocol, sock=self._sock, start_serving=False)
        self._guard.serve(self._sock)


def tcp_listeners(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets for every address `host` resolves to (as asyncio would bind)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _name, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address {addr!r}: "
                                         f"{(exc.strerror or '').lower()}") from None
            sock.listen(LISTEN_BACKLOG)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def throttle_asyncio_accept_errors(loop: asyncio.AbstractEventLoop,
                                   report: ThrottledEvent) -> None:
    """Route asyncio's per-failure accept() tracebacks (one per queued client, every second,
    from servers such as the embedded emulator) into `report`; other errors log as before."""
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ASYNCIO_ACCEPT_MESSAGE:
            exc = context.get("exception")
            code = getattr(exc, "errno", None) or 0
            report.hit(errno.errorcode.get(code, str(code)),
                       error=getattr(exc, "strerror", None) or str(exc))
        elif previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
