"""Runs an Emulator on its own event loop in a background thread, for synchronous callers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from tuningd.emulator.config import Clock, EmulatorConfig
from tuningd.emulator.server import Emulator
from tuningd.emulator.state import EmulatorState

T = TypeVar("T")


class ThreadedEmulator:
    """`with ThreadedEmulator(cfg) as emu: emu.url`; state access goes through the loop thread."""

    def __init__(self, config: EmulatorConfig | None = None, *, clock: Clock | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = Emulator(config, clock=clock, host=host, port=port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tuningd-emulator",
                                        daemon=True)

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def state(self) -> EmulatorState:
        """Direct access; prefer call() for anything that mutates while requests are served."""
        return self.emulator.state

    def call(self, fn: Callable[[], T]) -> T:
        """Run fn on the emulator's loop thread (no races with request handlers)."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def advance(self, seconds: float) -> None:
        self.call(lambda: self.emulator.advance(seconds))

    def snapshot(self) -> dict[str, Any]:
        return self.call(self.emulator.state.snapshot)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.emulator.start(), self._loop).result(timeout=30)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> ThreadedEmulator:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
