"""When a running job is expected to end: learned from the jobs of the same base model that
succeeded before (run time per billable token), so polls can wait out the time it cannot end."""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuningd.core.errors import TuningdError
from tuningd.core.model import Job, LocalState
from tuningd.vertex import wire

# Samples kept per base model: recent jobs describe the service as it is now.
MAX_SAMPLES = 50
# The least uncertainty assumed around an expected end, as a share of the expected run and in
# seconds: the service's speed varies from run to run.
MIN_SPREAD_FRACTION = 0.05
MIN_SPREAD_S = 60.0
# With a single sample the spread of run times is unknown: assume this much.
ONE_SAMPLE_SPREAD_FRACTION = 0.15
# Without the job's own size, a job is not expected to end before this share of the shortest
# run seen (create to end) for its base model.
LOWER_BOUND_FRACTION = 0.9


@dataclass(frozen=True)
class Eta:
    """What polling may assume of a job: it will not end before `quiet_until`; from then poll
    every `window_interval_s` until `overdue_at`, when the prediction is given up."""

    quiet_until: float
    window_interval_s: float
    overdue_at: float


@dataclass(frozen=True)
class _Sample:
    unit: str | None  # which size measure `units` is (None: no size known)
    units: float
    run_s: float  # startTime to endTime
    total_s: float  # createTime to endTime


_SIZE_KEYS = ("totalBillableTokenCount", "tuningStepCount")


def size_of(remote: Mapping[str, Any] | None) -> tuple[str, float] | None:
    """The job's size as Vertex reports it once its dataset is processed: billable tokens
    (tokens x epochs), else tuning steps, from any kind's tuningDataStats member."""
    stats = (remote or {}).get("tuningDataStats")
    if not isinstance(stats, Mapping):
        return None
    for member in stats.values():
        if not isinstance(member, Mapping):
            continue
        for key in _SIZE_KEYS:
            value = member.get(key)
            try:
                number = float(value) if value is not None else 0.0
            except (TypeError, ValueError):
                continue
            if number > 0:
                return key, number
    return None


def _time(remote: Mapping[str, Any], key: str) -> float | None:
    value = remote.get(key)
    if not isinstance(value, str):
        return None
    try:
        return wire.parse_timestamp(value)
    except TuningdError:  # a malformed time only means no prediction
        return None


class RunModel:
    """Run times of succeeded jobs per base model, and the expected end of a running one."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[_Sample]] = {}

    def learn(self, job: Job) -> None:
        """Take a succeeded job's run time (ignored unless Vertex gave its times)."""
        remote = job.remote
        if job.state is not LocalState.SUCCEEDED or remote is None:
            return
        created, start, end = (_time(remote, k) for k in ("createTime", "startTime", "endTime"))
        if created is None or start is None or end is None or end <= start:
            return
        size = size_of(remote)
        sample = _Sample(size[0] if size else None, size[1] if size else 0.0, end - start,
                         end - created)
        key = wire.base_model_id(job.base_model)
        self._samples.setdefault(key, deque(maxlen=MAX_SAMPLES)).append(sample)

    def eta(self, job: Job, *, max_interval_s: float) -> Eta | None:
        """The expected end of a pending or running job, or None when nothing is known."""
        samples = self._samples.get(wire.base_model_id(job.base_model))
        remote = job.remote
        if not samples or remote is None or job.state not in (LocalState.PENDING,
                                                               LocalState.RUNNING):
            return None
        size, start = size_of(remote), _time(remote, "startTime")
        if size is not None and start is not None:
            rates = [s.run_s / s.units for s in samples if s.unit == size[0] and s.units > 0]
            if rates:
                rate = statistics.median(rates)
                expected_run = rate * size[1]
                if len(rates) == 1:
                    fraction = ONE_SAMPLE_SPREAD_FRACTION
                else:
                    fraction = max(abs(r / rate - 1.0) for r in rates) + 0.02
                spread = max(MIN_SPREAD_FRACTION * expected_run, fraction * expected_run,
                             MIN_SPREAD_S)
                end = start + expected_run
                return Eta(quiet_until=end - spread,
                           window_interval_s=min(spread, max_interval_s),
                           overdue_at=end + 2 * spread)
        created = _time(remote, "createTime")
        if created is None:
            return None
        shortest = min(s.total_s for s in samples)
        return Eta(quiet_until=created + LOWER_BOUND_FRACTION * shortest,
                   window_interval_s=max_interval_s, overdue_at=created + shortest)
