"""Job ids as other writers commit them: LISTEN on a dedicated connection, "*" after a gap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from tuningd.adapters.postgres.failures import FAILURES, redact, scrub

__all__ = ["CHANGED_ALL", "CHANNEL", "ListenFeed"]

log = structlog.get_logger("tuningd.store")

# Every job write runs pg_notify(CHANNEL, job id) in its transaction: delivered at commit.
CHANNEL = "tuningd_jobs"
# Yielded after the listening connection was lost: notifications may have been missed.
CHANGED_ALL = "*"

_LOST = object()
# How often an idle listener checks its connection (a dead peer may not close the socket).
_PROBE_S = 5.0
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0

Connect = Callable[[], Awaitable["asyncpg.Connection[Any]"]]


class ListenFeed:
    """The ChangeFeed of one database: each changes() iterator holds its own LISTEN connection.

    `listening` is set while some iterator's connection listens (tests wait on it so a write
    they make next is surely seen).
    """

    def __init__(self, connect: Connect, url: str) -> None:
        self._connect = connect
        self._url = url
        self._closed = asyncio.Event()
        self.listening = asyncio.Event()

    def close(self) -> None:
        """End every changes() iterator (at its next step)."""
        self._closed.set()

    async def changes(self) -> AsyncIterator[str]:
        """Ids of jobs written by anyone, as they commit; "*" after a reconnect."""
        gap = False
        while not self._closed.is_set():
            # A queue per connection: what the old one put there (its end) is not news.
            queue: asyncio.Queue[object] = asyncio.Queue()
            conn = await self._listen(queue)
            if conn is None:
                return
            item: object | None = None
            try:
                if gap:
                    yield CHANGED_ALL
                while True:
                    item = await self._next(queue, conn)
                    if item is _LOST or item is None:
                        break
                    assert isinstance(item, str)
                    yield item
            finally:
                self.listening.clear()
                with contextlib.suppress(*FAILURES):
                    await conn.close(timeout=1.0)
            if item is None:
                return
            gap = True
            log.warning("store.feed_lost", database=redact(self._url),
                        hint="reconnecting; every job is reread")

    async def _next(self, queue: asyncio.Queue[object],
                    conn: asyncpg.Connection[Any]) -> object | None:
        """The next id or _LOST; None once the feed is closed."""
        while True:
            if self._closed.is_set():
                return None
            getter = asyncio.ensure_future(queue.get())
            closing = asyncio.ensure_future(self._closed.wait())
            try:
                done, _ = await asyncio.wait({getter, closing}, timeout=_PROBE_S,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                closing.cancel()
                if not getter.done():
                    getter.cancel()
            if getter in done:
                return getter.result()
            if closing in done:
                return None
            if conn.is_closed():
                return _LOST

    async def _listen(self, queue: asyncio.Queue[object]) -> asyncpg.Connection[Any] | None:
        """A connection LISTENing on CHANNEL into `queue`, retried until it works or the feed
        closes (None)."""
        delay_s = _RETRY_FIRST_S
        while not self._closed.is_set():
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await self._connect()
                await conn.add_listener(
                    CHANNEL, lambda _c, _pid, _channel, payload: queue.put_nowait(payload))
                conn.add_termination_listener(lambda _c: queue.put_nowait(_LOST))
            except FAILURES as exc:
                if conn is not None:
                    conn.terminate()
                log.warning("store.feed_connect_failed", database=redact(self._url),
                            error=scrub(str(exc) or type(exc).__name__, self._url),
                            retry_in_s=delay_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), timeout=delay_s)
                delay_s = min(delay_s * 2, _RETRY_MAX_S)
                continue
            self.listening.set()
            return conn
        return None
