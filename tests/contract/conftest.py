"""Fixtures for contract tests: an in-process emulator on its own thread for the blocking SDKs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tuningd.emulator import EmulatorConfig, ManualClock, ThreadedEmulator


@pytest.fixture
def emulator() -> Iterator[ThreadedEmulator]:
    """A manual-clock emulator (advance with emulator.advance(seconds)) served from a thread."""
    config = EmulatorConfig(pending_seconds=1, job_seconds=10, cancel_seconds=1, seed=1)
    with ThreadedEmulator(config, clock=ManualClock()) as emu:
        yield emu
