"""Pure request budgets (design §4): token buckets per location, fed `now` explicitly."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetSettings:
    """Per-location request budget; defaults well under Vertex's 600 CRUD and 60 creates/min."""

    requests_per_minute: float = 300.0
    creates_per_minute: float = 30.0
    burst_s: float = 10.0  # bucket capacity in seconds of rate (at least one token)
    slow_down_factor: float = 0.5
    min_rate_fraction: float = 1.0 / 16.0
    recover_after_s: float = 60.0



class TokenBucket:
    """A token bucket with explicit time; `slow_down` scales the rate down after a 429.

    Mutable on purpose: the engine owns one per location and calls it from one task.
    """

    def __init__(self, rate_per_minute: float, now: float, *, burst_s: float = 10.0,
                 slow_down_factor: float = 0.5, min_rate_fraction: float = 1.0 / 16.0,
                 recover_after_s: float = 60.0) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be > 0")
        self.base_rate_per_s = rate_per_minute / 60.0
        self.capacity = max(1.0, self.base_rate_per_s * burst_s)
        self.tokens = self.capacity
        self.updated_at = now
        self.rate_fraction = 1.0
        self._slow_down_factor = slow_down_factor
        self._min_rate_fraction = min_rate_fraction
        self._recover_after_s = recover_after_s
        self._recover_at: float | None = None

    @property
    def rate_per_s(self) -> float:
        return self.base_rate_per_s * self.rate_fraction

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last call; also step the rate back up after quiet."""
        now = max(now, self.updated_at)  # a clock step backwards must not drain the bucket
        while self._recover_at is not None and now >= self._recover_at:
            # Earn tokens at the slow rate up to the recovery point, then speed up.
            self._earn(self._recover_at)
            self.rate_fraction = min(1.0, self.rate_fraction / self._slow_down_factor)
            self._recover_at = (None if self.rate_fraction >= 1.0
                                else self._recover_at + self._recover_after_s)
        self._earn(now)

    def _earn(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated_at)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_s)
        self.updated_at = max(self.updated_at, now)

    def available(self, now: float) -> float:
        self.refill(now)
        return self.tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if they are there; False (and nothing taken) otherwise."""
        self.refill(now)
        if self.tokens + 1e-9 >= cost:
            self.tokens = max(0.0, self.tokens - cost)
            return True
        return False

    def seconds_until(self, now: float, cost: float = 1.0) -> float:
        """How long until `cost` tokens are there at the current rate (0 if they are now)."""
        self.refill(now)
        missing = cost - self.tokens
        if missing <= 1e-9:
            return 0.0
        return missing / self.rate_per_s

    def slow_down(self, now: float) -> None:
        """A 429: scale the rate by the factor (down to a floor) and restart the recovery clock."""
        self.refill(now)
        self.rate_fraction = max(self._min_rate_fraction,
                                 self.rate_fraction * self._slow_down_factor)
        self._recover_at = now + self._recover_after_s


@dataclass(frozen=True)
class BudgetSnapshot:
    """Whole tokens available at one instant, as the planner sees them."""

    requests: int
    creates: int


class LocationBudget:
    """The request budget of one location: all calls take a request token, creates one more."""

    def __init__(self, settings: BudgetSettings, now: float) -> None:
        kw = {"burst_s": settings.burst_s, "slow_down_factor": settings.slow_down_factor,
              "min_rate_fraction": settings.min_rate_fraction,
              "recover_after_s": settings.recover_after_s}
        self.requests = TokenBucket(settings.requests_per_minute, now, **kw)
        self.creates = TokenBucket(settings.creates_per_minute, now, **kw)

    def take_request(self, now: float, cost: float = 1.0) -> bool:
        return self.requests.take(now, cost)

    def take_create(self, now: float) -> bool:
        """A create costs one create token and one request token, or nothing at all."""
        if self.creates.available(now) + 1e-9 < 1.0 or self.requests.available(now) + 1e-9 < 1.0:
            return False
        return self.creates.take(now) and self.requests.take(now)

    def slow_down(self, now: float, *, create: bool = False) -> None:
        """Any 429 slows the request bucket; a create 429 slows the create bucket too."""
        self.requests.slow_down(now)
        if create:
            self.creates.slow_down(now)

    def snapshot(self, now: float) -> BudgetSnapshot:
        return BudgetSnapshot(requests=math.floor(self.requests.available(now) + 1e-9),
                              creates=math.floor(self.creates.available(now) + 1e-9))


class Budgets:
    """One LocationBudget per location, created on first use."""

    def __init__(self, settings: BudgetSettings) -> None:
        self.settings = settings
        self._by_location: dict[str, LocationBudget] = {}

    def location(self, location: str, now: float) -> LocationBudget:
        budget = self._by_location.get(location)
        if budget is None:
            budget = self._by_location[location] = LocationBudget(self.settings, now)
        return budget

    def spend_request(self, location: str, now: float) -> float:
        """Take one request token of the location (a call made outside the planner, e.g. the
        pass-through): 0.0 when taken, else the seconds until one is there (none taken)."""
        budget = self.location(location, now)
        if budget.take_request(now):
            return 0.0
        return max(budget.requests.seconds_until(now), 0.001)

    def snapshot(self, locations: Iterable[str], now: float) -> dict[str, BudgetSnapshot]:
        return {loc: self.location(loc, now).snapshot(now) for loc in set(locations)}


