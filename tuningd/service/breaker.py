"""The create breaker: which places have creates paused after a project-wide error, and probes.

The verdicts (what blames a place, how long to wait) are recovery's; this holds the paused
places of one daemon, tells metrics and the log when a place pauses or resumes, and marks the
single probe create allowed while a place is paused.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping

import structlog

from tuningd.adapters.metrics import Metrics
from tuningd.config import BreakerSettings
from tuningd.core import recovery
from tuningd.core.errors import RemoteError
from tuningd.core.planner import Place

log = structlog.get_logger("tuningd.service.breaker")


class Breaker:
    """Paused places, in memory: after a restart the first create rediscovers a pause."""

    def __init__(self, settings: Callable[[], BreakerSettings], clock: Callable[[], float],
                 rng: random.Random, metrics: Metrics | None) -> None:
        self._settings = settings
        self._clock = clock
        self._rng = rng
        self._metrics = metrics
        self._pauses: dict[Place, recovery.Pause] = {}

    @property
    def pauses(self) -> Mapping[Place, recovery.Pause]:
        return self._pauses

    def known(self, place: Place) -> None:
        """A place exists: its paused gauge reads 0 until it pauses."""
        if self._metrics is not None and place not in self._pauses:
            self._metrics.set_creates_paused(*place, False)

    def probe_started(self, place: Place) -> None:
        """The planner let one create through to a paused place: hold the others back."""
        pause = self._pauses.get(place)
        if pause is not None:
            self._pauses[place] = dataclasses.replace(pause, probing=True)

    def refused(self, place: Place, exc: RemoteError) -> recovery.Pause:
        """A create was refused for the whole place: pause, or back off the failed probe."""
        now = self._clock()
        previous = self._pauses.get(place)
        if previous is not None and not previous.probing:
            return previous  # a create already in flight when the pause began: no news
        pause = recovery.paused_after(previous, exc.status, exc.message, now, self._settings(),
                                      self._rng)
        self._pauses[place] = pause
        if self._metrics is not None:
            self._metrics.set_creates_paused(*place, True)
            self._metrics.count_create_pause(exc.status)
        log.error("creates.paused", project=place[0], location=place[1], status=exc.status,
                  http_status=exc.http_status, error=exc.message, failures=pause.failures,
                  probe_in_s=round(pause.probe_at - now, 1))
        return pause

    def answered(self, place: Place) -> bool:
        """A create got a real answer from the place (created, 429, a job-level 400): resume.
        True if the place was paused."""
        pause = self._pauses.pop(place, None)
        if pause is None:
            return False
        if self._metrics is not None:
            self._metrics.set_creates_paused(*place, False)
        log.info("creates.resumed", project=place[0], location=place[1],
                 paused_s=round(self._clock() - pause.since, 1))
        return True

    def probe_now(self) -> None:
        """Every paused place may probe at once (an operator says the cause is fixed: SIGHUP)."""
        now = self._clock()
        for place, pause in self._pauses.items():
            if not pause.probing:
                self._pauses[place] = dataclasses.replace(pause, probe_at=now)

    def inconclusive(self, place: Place) -> None:
        """The probe proved nothing (unknown outcome, not sent): probe again later."""
        pause = self._pauses.get(place)
        if pause is not None and pause.probing:
            self._pauses[place] = recovery.probe_deferred(pause, self._clock(), self._settings(),
                                                          self._rng)
