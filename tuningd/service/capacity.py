"""What may run now: caps that learn from create outcomes, request budgets, calls in flight.

The planner reads all of it each round; the actions teach it (a create 429 lowers a cap, a
success raises it again, a 429 anywhere slows the location's budget).
"""

from __future__ import annotations

from collections.abc import Iterable

from tuningd.core.budget import Budgets, BudgetSettings
from tuningd.core.limits import AdaptiveLimits, Limits, active_counts, scopes_of
from tuningd.core.model import Job, LocalState


class Capacity:
    """Adaptive caps, per-location budgets, jobs with a call in flight, refused list filters."""

    def __init__(self, budgets: BudgetSettings) -> None:
        self.adaptive = AdaptiveLimits()
        self.budgets = Budgets(budgets)
        # Job ids with a remote call in flight (a busy queued job is a create under way).
        self.busy: set[str] = set()
        # Locations where the list filter was refused: per-job GETs there.
        self.batch_refused: set[str] = set()
        # Creates in flight when a create got 429: the lowered cap already counts them, so their
        # success is no evidence of more room and must not raise the cap again.
        self._counted_in_cap: set[str] = set()

    def reset(self, budgets: BudgetSettings) -> None:
        """New settings (SIGHUP): lowered caps and slowed budgets start afresh."""
        self.adaptive = self.adaptive.reset()
        self.budgets = Budgets(budgets)

    def create_resolved(self, job: Job, *, succeeded: bool, limits: Limits) -> None:
        """A create's outcome is known: a success may raise lowered caps."""
        if job.id in self._counted_in_cap:
            self._counted_in_cap.discard(job.id)
            return
        if succeeded:
            self.adaptive = self.adaptive.on_create_succeeded(scopes_of(job), limits)

    def create_throttled(self, job: Job, working_set: Iterable[Job], now: float) -> None:
        """A create got 429: its scopes drop to what is active without it; its budget slows."""
        others = [j for j in working_set if j.id != job.id]
        self.adaptive = self.adaptive.on_throttled(
            scopes_of(job), active_counts(others, self.busy - {job.id}))
        self._counted_in_cap.update(j.id for j in others
                                    if j.state is LocalState.SUBMITTING or j.id in self.busy)
        self.budgets.location(job.location, now).slow_down(now, create=True)

    def read_throttled(self, location: str, now: float) -> None:
        """A read got 429: the location's request budget slows."""
        self.budgets.location(location, now).slow_down(now)
