"""Emulator settings and the clock abstraction that drives every job lifecycle."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from tuningd.emulator.faults import Faults
from tuningd.vertex.wire import ModelCatalog

DEFAULT_PROJECT_NUMBER = "123456789012"


class QuotaMode(StrEnum):
    """What create does when the global concurrent-tuning-job quota is full."""

    WAIT = "wait"  # accept; the job waits in PENDING / WAITING_FOR_QUOTA (FIFO)
    REJECT = "reject"  # 429 RESOURCE_EXHAUSTED at create


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that shapes the emulator's behaviour; immutable once the emulator starts."""

    project_number: str = DEFAULT_PROJECT_NUMBER
    pending_seconds: float = 5.0
    job_seconds: float = 60.0
    # When > 0, a job's RUNNING time follows its size as Vertex's does: its billable tokens
    # (tokens x epochs, known once its dataset is read) times this rate, instead of job_seconds.
    seconds_per_million_tokens: float = 0.0
    # Run-to-run variation of that time: each job's is scaled by a factor within 1 +- this,
    # fixed per job id (the service is not equally fast every time).
    run_spread: float = 0.0
    # How long CANCELLING lasts before CANCELLED.
    cancel_seconds: float = 1.0
    cancel_completes_probability: float = 0.0
    max_concurrent: int = 1
    quota_mode: QuotaMode = QuotaMode.WAIT
    # Google rejects unknown JSON fields; newer SDKs send newer fields, hence the switch.
    strict_unknown_fields: bool = True
    token_seconds: int = 3599
    strict_auth: bool = False
    gcs_root: Path | None = None
    seed: int | None = None
    requests_per_minute: int = 0  # 0 = unlimited
    creates_per_minute: int = 0  # 0 = unlimited
    default_page_size: int = 50
    max_page_size: int = 100
    # Per-example token limit; longer examples are dropped (spec §6: 131,072).
    max_example_tokens: int = 131_072
    faults: Faults = field(default_factory=Faults)
    catalog: ModelCatalog | None = None  # None = wire.DEFAULT_CATALOG
    # Real-clock only: how often a background task applies due transitions so logs are timely.
    tick_seconds: float = 0.2

    def __post_init__(self) -> None:
        if not self.project_number.isdigit():
            raise ValueError("project_number must be decimal digits")
        if not 0.0 <= self.run_spread < 1.0:
            raise ValueError("run_spread must be within [0, 1)")
        for name in ("pending_seconds", "job_seconds", "cancel_seconds", "tick_seconds",
                     "seconds_per_million_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        if not 0.0 <= self.cancel_completes_probability <= 1.0:
            raise ValueError("cancel_completes_probability must be within [0, 1]")
        if self.token_seconds < 1:
            raise ValueError("token_seconds must be >= 1")
        if self.requests_per_minute < 0 or self.creates_per_minute < 0:
            raise ValueError("rate limits must be >= 0")
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise ValueError("need 1 <= default_page_size <= max_page_size")


class Clock(Protocol):
    """A source of wall-clock Unix seconds that never goes backwards."""

    def now(self) -> float: ...


class SystemClock:
    """Wall time anchored once, advanced by the monotonic clock (immune to NTP steps)."""

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def now(self) -> float:
        return self._wall0 + (time.monotonic() - self._mono0)


class ManualClock:
    """A clock that only moves when told to; makes lifecycle tests exact and sleep-free."""

    # 2025-06-02T10:15:03Z: a fixed, realistic start keeps timestamps reproducible.
    DEFAULT_START_S = 1_748_859_303.0

    def __init__(self, start_s: float = DEFAULT_START_S) -> None:
        self._now = start_s

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds
        return self._now
