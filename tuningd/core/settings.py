"""The engine's settings: one record of core policy values (app.py builds it from config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tuningd.config import (
    BreakerSettings,
    PollingSettings,
    RetrySettings,
    SchedulingSettings,
)
from tuningd.core import planner, recovery
from tuningd.core.budget import BudgetSettings
from tuningd.core.limits import Limits


@dataclass(frozen=True)
class EngineSettings:
    """Everything the engine needs from the configuration, as core policy values."""

    limits: Limits = field(default_factory=Limits)
    polling: PollingSettings = field(default_factory=PollingSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)
    reconcile: recovery.AbsenceRule = field(default_factory=recovery.AbsenceRule)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    # Every place (project, location) is listed this often for managed-by=tuningd jobs that no
    # tracked local job owns; duplicates and late landings are cancelled when cancel_unowned.
    sweep_interval_s: float = 900.0
    cancel_unowned: bool = True
    # Places swept even when no local job names them (e.g. after the database was lost).
    sweep_places: tuple[planner.Place, ...] = ()
    # Upper bound on how long the loop sleeps, so the watchdog sees progress while idle.
    tick_s: float = 1.0
