"""When a job acts next: poll intervals with backoff and jitter, retries, aging, queue order."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from tuningd.config import PollingSettings, RetrySettings, SchedulingSettings
from tuningd.core.eta import Eta
from tuningd.core.model import Job, LocalState, TuningJobState


def next_poll_interval(job: Job, changed: bool, settings: PollingSettings) -> float:
    """The un-jittered interval to the next poll; store it as Job.poll_interval_s.

    Reset to the initial interval after a change, grow by the multiplier while nothing changes,
    clamp to the maximum. Sub-states steer it: waiting for quota is slow (max), cancelling is fast
    (initial), pending is capped by `pending_max_interval_s`.
    """
    initial, maximum = settings.initial_interval_s, settings.max_interval_s
    if job.state is LocalState.CANCELLING:
        return initial
    if job.remote_substate == TuningJobState.TUNING_JOB_STATE_WAITING_FOR_QUOTA:
        return maximum
    if changed or job.poll_interval_s <= 0:
        interval = initial
    else:
        interval = min(maximum, max(initial, job.poll_interval_s * settings.multiplier))
    if job.state is LocalState.PENDING and settings.pending_max_interval_s:
        interval = min(interval, max(initial, settings.pending_max_interval_s))
    return interval


def jittered(delay_s: float, fraction: float, rng: random.Random) -> float:
    """`delay_s` scaled by a uniform factor in [1 - fraction, 1 + fraction]."""
    return delay_s * rng.uniform(1.0 - fraction, 1.0 + fraction)


@dataclass(frozen=True)
class PollSchedule:
    interval_s: float
    next_poll_at: float


def schedule_poll(job: Job, changed: bool, now: float, settings: PollingSettings,
                  rng: random.Random, eta: Eta | None = None) -> PollSchedule:
    """Interval to store plus the jittered next poll time (for Transition.with_schedule).

    With an expected end (`eta`), a job that cannot have ended yet is left alone until it
    could (but never longer than `quiet_max_s`: an early failure is still seen), and near the
    expected end it is polled every `window_interval_s`; once overdue the usual ramp applies."""
    interval = next_poll_interval(job, changed, settings)
    at = now + jittered(interval, settings.jitter, rng)
    if eta is None or job.state is LocalState.CANCELLING or (
            job.state is LocalState.PENDING and settings.pending_max_interval_s):
        return PollSchedule(interval, at)
    if now < eta.quiet_until:
        return PollSchedule(interval, min(eta.quiet_until,
                                          now + max(settings.quiet_max_s, interval)))
    if now < eta.overdue_at:
        window = max(settings.initial_interval_s, eta.window_interval_s)
        return PollSchedule(window, now + window)
    return PollSchedule(interval, at)


def retry_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter backoff: uniform in [0, min(cap, base * 2**(attempt-1))]; attempt >= 1."""
    exponent = min(max(attempt, 1) - 1, 62)  # bounded so the power cannot overflow
    return rng.uniform(0.0, min(cap_s, base_s * 2.0 ** exponent))


def retry_at(job: Job, now: float, settings: RetrySettings, rng: random.Random) -> float:
    """When to retry after the job's next transient failure (uses retry_count + 1)."""
    return now + retry_delay(job.retry_count + 1, settings.base_s, settings.cap_s, rng)


def effective_priority(job: Job, now: float, settings: SchedulingSettings) -> int:
    """Priority plus one point per `aging_interval_s` waited since acceptance (at most
    `max_aging_bonus` points when that is not 0)."""
    bonus = max(0, math.floor((now - job.created_at) / settings.aging_interval_s))
    if settings.max_aging_bonus:
        bonus = min(bonus, settings.max_aging_bonus)
    return job.priority + bonus


def queue_order(jobs: Iterable[Job], now: float, settings: SchedulingSettings) -> list[Job]:
    """Queued jobs in submission order: effective priority down, then oldest, then id."""
    queued = [j for j in jobs if j.state is LocalState.QUEUED]
    return sorted(queued, key=lambda j: (-effective_priority(j, now, settings), j.created_at, j.id))


# Jobs that have a remote side (or may have one): after a restart or a takeover nothing is known
# of what happened to them meanwhile.
_LOOK_AFTER_RESTART = frozenset({LocalState.SUBMITTING, LocalState.PENDING, LocalState.RUNNING,
                                 LocalState.CANCELLING})


def after_restart(job: Job, now: float) -> float:
    """When a job of the loaded working set acts first after a (re)start or a takeover: at once
    if it has or may have a remote side and was not due yet; queued jobs keep their place."""
    if job.state in _LOOK_AFTER_RESTART and job.next_action_at > now:
        return now
    return job.next_action_at

