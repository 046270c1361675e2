"""The network gate: every Vertex request of the engine waits at send and at reply for the sim."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

import aiohttp


class Phase(StrEnum):
    """Where a request waits: before it is sent, or after Vertex answered (headers in)."""

    SEND = "send"
    REPLY = "reply"


class SimStuck(RuntimeError):
    """An engine task neither parked nor finished within the real-time watchdog: a sim bug or a
    hang in the engine (a wait on something no step will ever provide)."""


@dataclass
class Parked:
    """One request waiting at the gate until the sim releases, fails or times it out."""

    key: str  # stable across runs: "<task name>#<n>:<phase>"
    phase: Phase
    method: str  # create / get / list / cancel
    path: str
    task: asyncio.Task[Any]
    deadline_s: float  # sim time at which the client gives up (its request timeout)
    future: asyncio.Future[BaseException | None]


def api_method(http_method: str, path: str) -> str:
    """The Vertex method a request is, from its HTTP method and path."""
    if path.endswith(":cancel"):
        return "cancel"
    if path.endswith("/tuningJobs"):
        return "create" if http_method == "POST" else "list"
    return "get" if http_method == "GET" else "other"


class Gate:
    """Parks requests made by tracked tasks (the engine's actions) in aiohttp trace callbacks.

    `on_request_start` runs before anything is sent; `on_request_end` once the response headers
    are in, i.e. Vertex has acted but the engine has not seen the answer. Untracked tasks pass.
    The quiescence wait relies on every tracked task being, at any moment, either running (it
    will park or finish by itself) or parked here.
    """

    def __init__(self, now: Callable[[], float], timeout_s: float) -> None:
        self._now = now
        self.timeout_s = timeout_s
        self.parked: dict[str, Parked] = {}
        self._tracked: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._counters: dict[str, int] = {}

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()
        config.on_request_start.append(self._on_start)
        config.on_request_end.append(self._on_end)
        return config

    # ----------------------------------------------------------------- task tracking

    def track(self, task: asyncio.Task[Any]) -> None:
        if task in self._tracked or task.done():
            return
        self._tracked.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tracked.discard(task)
        self._changed.set()

    def running(self) -> list[asyncio.Task[Any]]:
        """Tracked tasks that are neither parked nor done."""
        waiting = {p.task for p in self.parked.values()}
        return [t for t in self._tracked if not t.done() and t not in waiting]

    async def quiesce(self, watchdog_s: float = 30.0) -> None:
        """Wait (on events, not sleeps) until every tracked task is parked or done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + watchdog_s
        while self.running():
            self._changed.clear()
            left = deadline - loop.time()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(left, 0.0))
            except TimeoutError:
                names = sorted(t.get_name() for t in self.running())
                raise SimStuck(f"engine tasks neither parked nor done: {names}") from None

    # ----------------------------------------------------------------- the sim's moves

    def sorted_parked(self) -> list[Parked]:
        return [self.parked[k] for k in sorted(self.parked)]

    def release(self, key: str, error: BaseException | None = None) -> Parked:
        """Let the request go on (or fail it with `error` at this point)."""
        parked = self.parked.pop(key)
        if not parked.future.done():
            parked.future.set_result(error)
        return parked

    def expire(self) -> list[Parked]:
        """Time out every request whose client deadline has passed, in key order."""
        now = self._now()
        due = [p for p in self.sorted_parked() if p.deadline_s <= now]
        for parked in due:
            self.release(parked.key, TimeoutError())
        return due

    def next_deadline_s(self) -> float | None:
        return min((p.deadline_s for p in self.parked.values()), default=None)

    # ----------------------------------------------------------------- trace callbacks

    async def _on_start(self, session: aiohttp.ClientSession, ctx: SimpleNamespace,
                        params: aiohttp.TraceRequestStartParams) -> None:
        ctx.deadline_s = self._now() + self.timeout_s
        await self._park(Phase.SEND, ctx, params.method, params.url.path)

    async def _on_end(self, session: aiohttp.ClientSession, ctx: SimpleNamespace,
                      params: aiohttp.TraceRequestEndParams) -> None:
        await self._park(Phase.REPLY, ctx, params.method, params.url.path)

    async def _park(self, phase: Phase, ctx: SimpleNamespace, http_method: str,
                    path: str) -> None:
        task = asyncio.current_task()
        if task is None or task not in self._tracked:
            return
        if phase is Phase.SEND:
            name = task.get_name()
            n = self._counters[name] = self._counters.get(name, 0) + 1
            ctx.key = f"{name}#{n}"
        key = f"{ctx.key}:{phase.value}"
        future: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.parked[key] = Parked(key, phase, api_method(http_method, path), path, task,
                                  ctx.deadline_s, future)
        self._changed.set()
        try:
            error = await future
        finally:
            self.parked.pop(key, None)  # cancelled (a crash) while parked
        if error is not None:
            raise error
