"""Pure verdicts on uncertain remote facts: create presumed absent, job presumed lost, place paused.

Each "is it really so?" decision of the daemon is made here and only here, from the job's stored
evidence, the settings and `now` (no I/O, no clock): when an unknown-outcome create may be
presumed absent, when a 404 may be believed, when a project-wide error pauses creates and when
to probe again, and what a remote job found by the sweep is to tuningd.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from tuningd.config import BreakerSettings, ReconcileSettings
from tuningd.core.errors import AUTH, INVALID_REQUEST, PERMANENT, QUOTA, TRANSIENT
from tuningd.core.model import Job, LocalState

# ---------------------------------------------------------------------------------------------
# Settings (config.py builds these from TOML; the defaults are the documented defaults)


@dataclass(frozen=True)
class AbsenceRule:
    """How long and how often to look before believing that something is not on Vertex.

    Not a second settings type: the rule that config's [reconcile] section, the [vertex]
    request timeout and (on a shared store) the [ha] lease make together (from_settings).

    A create that failed without an answer (timeout, reset, 5xx, crash) may still be stored by
    Vertex after the client gave up (up to about one request timeout later), and Vertex's list
    may show it only `list_lag_s` after that. So emptiness counts only from
    `attempt end + request_timeout_s + list_lag_s`, and only `absent_confirmations` empty lists,
    spaced `confirm_spacing_s`, 2x, 4x ... apart, make a create "absent".
    """

    request_timeout_s: float = 60.0
    list_lag_s: float = 60.0
    absent_confirmations: int = 3
    confirm_spacing_s: float = 60.0
    # A GET that answers 404 is believed only after this pause and a list that agrees.
    not_found_confirm_s: float = 60.0
    # Several instances on one store: a former leader may have begun a create until its lease
    # ran out by its own clock, up to one lease after the last renew this instance could see;
    # emptiness counts that much later too (ha.lease_ttl_s there; 0 for a single instance).
    leader_grace_s: float = 0.0

    @classmethod
    def from_settings(cls, reconcile: ReconcileSettings, *, request_timeout_s: float,
                      leader_grace_s: float = 0.0) -> AbsenceRule:
        """The rule of a [reconcile] section, with the request timeout and leader grace."""
        return cls(request_timeout_s=request_timeout_s, list_lag_s=reconcile.list_lag_s,
                   absent_confirmations=reconcile.absent_confirmations,
                   confirm_spacing_s=reconcile.confirm_spacing_s,
                   not_found_confirm_s=reconcile.not_found_confirm_s,
                   leader_grace_s=leader_grace_s)

    @property
    def landing_window_s(self) -> float:
        """Seconds after a failed attempt before an empty list means anything."""
        return self.request_timeout_s + self.list_lag_s + self.leader_grace_s

    @property
    def absent_after_s(self) -> float:
        """Seconds from a failed attempt's end to the earliest "absent" verdict."""
        spacing = sum(self.confirm_spacing_s * 2.0 ** i
                      for i in range(max(0, self.absent_confirmations - 1)))
        return self.landing_window_s + spacing


# ---------------------------------------------------------------------------------------------
# An unknown create outcome: presumed absent only after spaced, late-enough empty lists


@dataclass(frozen=True)
class AbsenceVerdict:
    """What one empty reconcile list means for a submitting job."""

    absent: bool
    # The job's absent_checks after this list (unchanged when it came too early to count).
    checks: int
    # When to list again (meaningless when absent).
    next_check_at: float


def attempt_end(job: Job) -> float:
    """When the job's last create attempt ended (its start if no end was recorded)."""
    for candidate in (job.attempt_ended_at, job.submit_started_at):
        if candidate is not None:
            return candidate
    return job.updated_at


def absence_verdict(job: Job, now: float, settings: AbsenceRule) -> AbsenceVerdict:
    """The verdict after a reconcile list found no remote job for `job` at `now`.

    A list earlier than the landing window proves nothing (the create may still land or not be
    listed yet): it does not count, and the next look is at the window's start.
    """
    window_start = attempt_end(job) + settings.landing_window_s
    if now < window_start:
        return AbsenceVerdict(False, job.absent_checks, window_start)
    checks = job.absent_checks + 1
    if checks >= settings.absent_confirmations:
        return AbsenceVerdict(True, checks, now)
    return AbsenceVerdict(False, checks, now + settings.confirm_spacing_s * 2.0 ** (checks - 1))


# ---------------------------------------------------------------------------------------------
# A 404 on a job tuningd created: believed only when it repeats and a list agrees


class NotFoundStep(StrEnum):
    RECHECK_LATER = "recheck_later"
    CONFIRM_BY_LIST = "confirm_by_list"


def after_not_found(job: Job) -> NotFoundStep:
    """A read of the job's remote job answered 404: look again later, or settle it by a list.

    One 404 is not proof (a proxy, a wrong endpoint, a moment of inconsistency); a second one
    after a pause is settled by listing the job's label, which fails loudly on a misconfigured
    endpoint instead of answering "not there".
    """
    return NotFoundStep.RECHECK_LATER if job.missing_checks == 0 else NotFoundStep.CONFIRM_BY_LIST


# ---------------------------------------------------------------------------------------------
# Project-wide errors: pause creates for the place, probe with backoff


# Statuses that indict the project or location rather than the job (status names as Google
# sends them in the error envelope).
_PLACE_STATUSES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND",
                             "FAILED_PRECONDITION"})


class CreateVerdict(StrEnum):
    """What a failed create means, decided in one place (see create_verdict)."""

    INVALID = "invalid"  # refused before sending; can never be sent: fail the job
    PLACE_REFUSED = "place_refused"  # the whole project/location refuses: pause, keep the job
    REJECTED = "rejected"  # Vertex refused this job's body: fail the job
    THROTTLED = "throttled"  # 429: back to the queue, lower the cap
    NOT_MADE = "not_made"  # definitely not created, nothing wrong with the job: retry later
    UNKNOWN = "unknown"  # the job may exist: reconcile before anything else


def create_verdict(http_status: int, status: str, kind: str, *, message: str = "",
                   model: str = "") -> CreateVerdict:
    """Route a failed create by the Vertex client's kind and Google's status.

    401 (after a token refresh) and unusable credentials, 403 (IAM, API disabled, billing), 404 on
    the collection (no such project or location, or a wrong endpoint) and FAILED_PRECONDITION
    answer every job of the place alike: failing each queued job in turn would wipe the queue
    for one operator mistake. A 400 INVALID_ARGUMENT is about the job's own body. A 409
    (ABORTED) means the request lost a conflict and made nothing.

    A 403 or 404 whose `message` names the job's source `model` ("Publisher Model ... was not
    found", no access to a preview model) is about that model, not the place: the job is
    rejected and the place's other jobs go on (tuningd forwards models it does not know).
    """
    if kind == INVALID_REQUEST:
        return CreateVerdict.INVALID
    if http_status in (403, 404) and kind != AUTH and model and model in message:
        return CreateVerdict.REJECTED
    if kind == AUTH or http_status in (401, 403, 404) or (
            http_status == 400 and status in _PLACE_STATUSES):
        return CreateVerdict.PLACE_REFUSED
    if kind == QUOTA:
        return CreateVerdict.THROTTLED
    if kind == TRANSIENT or http_status == 409:
        return CreateVerdict.NOT_MADE
    if kind == PERMANENT:
        return CreateVerdict.REJECTED
    return CreateVerdict.UNKNOWN


@dataclass(frozen=True)
class Pause:
    """Creates to one (project, location) are paused; one probe create is allowed at probe_at."""

    status: str
    message: str
    since: float
    probe_at: float
    failures: int = 1
    # A probe create is in flight: no other create to this place until it resolves.
    probing: bool = False


def paused_after(previous: Pause | None, status: str, message: str, now: float,
                 settings: BreakerSettings, rng: random.Random) -> Pause:
    """The pause after a create (or a probe) was refused for the whole place."""
    failures = 1 if previous is None else previous.failures + 1
    exponent = min(failures - 1, 30)
    delay = min(settings.probe_max_s, settings.probe_initial_s * 2.0 ** exponent)
    delay *= rng.uniform(1.0 - settings.jitter, 1.0 + settings.jitter)
    since = now if previous is None else previous.since
    return Pause(status=status, message=message, since=since, probe_at=now + delay,
                 failures=failures)


def probe_deferred(pause: Pause, now: float, settings: BreakerSettings,
                   rng: random.Random) -> Pause:
    """The probe's outcome was not a verdict (unknown, or not sent): probe again later."""
    exponent = min(pause.failures - 1, 30)
    delay = min(settings.probe_max_s, settings.probe_initial_s * 2.0 ** exponent)
    delay *= rng.uniform(1.0 - settings.jitter, 1.0 + settings.jitter)
    return Pause(status=pause.status, message=pause.message, since=pause.since,
                 probe_at=now + delay, failures=pause.failures)


# ---------------------------------------------------------------------------------------------
# The sweep: what a managed remote job is to tuningd


class Finding(StrEnum):
    """A remote job labelled managed-by=tuningd, seen by the sweep, from tuningd's side."""

    OURS = "ours"  # the remote job a local job tracks
    ADOPT = "adopted"  # the local job is waiting for a create's outcome (or was requeued)
    DUPLICATE = "duplicate"  # a second remote job for a local job that tracks another one
    LATE = "late"  # a remote job for a local job that has ended or was cancelled
    UNKNOWN = "unknown"  # no local job has its tuningd-job-id
    UNDECIDED = "undecided"  # the local job's create is in flight: look again next sweep


def classify(remote_id: str, local: Job | None, *, create_in_flight: bool) -> Finding:
    """What a swept remote job (by its id after /tuningJobs/) is to the local job of its label."""
    if local is None:
        return Finding.UNKNOWN
    if local.remote_id == remote_id:
        return Finding.OURS
    if local.state in (LocalState.QUEUED, LocalState.SUBMITTING):
        return Finding.UNDECIDED if create_in_flight else Finding.ADOPT
    if local.state.is_terminal:
        return Finding.LATE
    return Finding.DUPLICATE
