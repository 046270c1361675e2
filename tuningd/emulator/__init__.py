"""A faithful in-process/standalone emulator of the Vertex AI `tuningJobs` REST API (design §9)."""

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

__all__ = [
    "DEFAULT_PROJECT_NUMBER",
    "METHODS",
    "Clock",
    "EmulatedJob",
    "Emulator",
    "EmulatorConfig",
    "EmulatorState",
    "ErrorRule",
    "Faults",
    "LostReplyMode",
    "ManualClock",
    "QuotaMode",
    "SystemClock",
    "ThreadedEmulator",
    "make_app",
]
