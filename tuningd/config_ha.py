"""The [ha] settings: several instances on one shared store, one of them running the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tuningd.config_values import Section, key
from tuningd.core.errors import ConfigError


@dataclass(frozen=True)
class HaSettings(Section):
    """The engine's lease among instances sharing a store (ignored with SQLite: one instance).

    A leader that dies is replaced within about `lease_ttl_s + acquire_interval_s` (12 s with
    the defaults); a leader that cannot renew for `lease_ttl_s - fence_margin_s` stops its
    engine on its own, before any other instance can take the lease.
    """

    section: ClassVar[str] = "ha"

    lease_ttl_s: float = key(10.0, positive=True)
    acquire_interval_s: float = key(2.0, positive=True)
    # Stop acting this long before the lease would run out by this instance's own clock, so
    # that a slow clock or a slow renew reply never overlaps with the next leader.
    fence_margin_s: float = key(2.0, min_value=0.0)
    # This instance's name in the lease ("" = hostname-pid); unique among the instances.
    instance_id: str = key("")

    def _cross_check(self) -> None:
        # A renew is sent every ttl/3: the fence must come after the first one can answer.
        if self.fence_margin_s >= self.lease_ttl_s * 2 / 3:
            raise ConfigError(
                f"config key ha.fence_margin_s: must be less than two thirds of ha.lease_ttl_s "
                f"({self.lease_ttl_s * 2 / 3:g}), got {self.fence_margin_s:g}")
        if self.acquire_interval_s > self.lease_ttl_s:
            raise ConfigError(
                f"config key ha.acquire_interval_s: must not exceed ha.lease_ttl_s "
                f"({self.lease_ttl_s:g}), got {self.acquire_interval_s:g}")

    def holder(self, default: str) -> str:
        """This instance's id in the lease: instance_id, else `default` (hostname-pid)."""
        return self.instance_id or default

    @property
    def renew_interval_s(self) -> float:
        return self.lease_ttl_s / 3

    @property
    def fence_after_s(self) -> float:
        """Seconds after the start of the last good renew at which this leader stops acting."""
        return self.lease_ttl_s - self.fence_margin_s
