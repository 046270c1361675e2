"""A faithful in-process/standalone emulator of the Vertex AI `tuningJobs` REST API (design §9).

Its names load on first use, so the CLI's parser (which defines `tuningd emulator`'s flags)
does not import the server on every client command."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuningd.emulator.config import (
        DEFAULT_PROJECT_NUMBER,
        Clock,
        EmulatorConfig,
        ManualClock,
        QuotaMode,
        SystemClock,
    )
    from tuningd.emulator.faults import METHODS, ErrorRule, Faults, LostReplyMode
    from tuningd.emulator.server import Emulator, make_app
    from tuningd.emulator.state import EmulatedJob, EmulatorState
    from tuningd.emulator.threaded import ThreadedEmulator

_HOMES = {
    "DEFAULT_PROJECT_NUMBER": "config", "Clock": "config", "EmulatorConfig": "config",
    "ManualClock": "config", "QuotaMode": "config", "SystemClock": "config",
    "METHODS": "faults", "ErrorRule": "faults", "Faults": "faults", "LostReplyMode": "faults",
    "Emulator": "server", "make_app": "server",
    "EmulatedJob": "state", "EmulatorState": "state",
    "ThreadedEmulator": "threaded",
}

__all__ = [
    "DEFAULT_PROJECT_NUMBER", "METHODS", "Clock", "EmulatedJob", "Emulator", "EmulatorConfig",
    "EmulatorState", "ErrorRule", "Faults", "LostReplyMode", "ManualClock", "QuotaMode",
    "SystemClock", "ThreadedEmulator", "make_app",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
